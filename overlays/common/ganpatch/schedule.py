"""Learning-rate schedules that are a function of the iteration alone.

Gorbunov et al., "Clipped Stochastic Methods for Variational Inequalities with Heavy-Tailed Noise" (NeurIPS
2022, arXiv 2206.01095) decay the learning rate linearly to 0 over the run in their GAN experiments, as the
WGAN-GP code they build on does. Because the lr here depends on the iteration only, and the initial lr is
stored in the optimizer's state_dict, a run resumed at iteration k continues the same schedule.
"""

SCHEDULES = ('none', 'linear')


def lr_factor(schedule, itr, total_itrs):
    """Multiplier of the initial lr for the update that follows `itr` completed iterations out of `total_itrs`.

    'none': 1. 'linear': 1 - itr / total_itrs, never below 0, so the first update uses the full lr and
    the last (itr = total_itrs - 1) uses 1/total_itrs of it.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f'Unknown lr schedule {schedule!r}; expected one of {", ".join(SCHEDULES)}')
    if schedule == 'none':
        return 1.0
    if not isinstance(total_itrs, int) or total_itrs < 1:
        raise ValueError(f'The linear lr schedule needs total_itrs >= 1, got {total_itrs!r}')
    return max(0.0, 1.0 - itr / total_itrs)


def set_lr(optimizer, schedule, itr, total_itrs):
    """Set every param group's lr to initial_lr * lr_factor(schedule, itr, total_itrs); 'none' changes nothing.

    The first call records each group's current lr as 'initial_lr' (the key torch.optim.lr_scheduler uses).
    That key is saved with `optimizer.state_dict()`, so after `load_state_dict` the decay continues from the
    same initial lr.
    """
    factor = lr_factor(schedule, itr, total_itrs)
    if schedule == 'none':
        return
    for group in optimizer.param_groups:
        group.setdefault('initial_lr', group['lr'])
        group['lr'] = group['initial_lr'] * factor
