"""ACClip, adaptive coordinate-wise clipping, with per-network gradient clipping on top.

Zhang, Karimireddy, Veit, Kim, Reddi, Kumar, Sra, "Why are adaptive methods good for attention models?",
NeurIPS 2020, Algorithm 2 (ACClip). Every operation is per coordinate; g is the gradient after the network's
clip (`ganpatch.optim_base`) plus the L2 weight decay wd * x:

    m     <- b1 m + (1 - b1) g                          momentum
    tau^a <- b2 tau^a + (1 - b2) |g|^a                  running a-th absolute moment, 1 <= a <= 2
    u      = min(1, tau / (|m| + eps)) m                the momentum clipped at the adaptive threshold tau
    x     <- x - lr u

The paper sets a = 1 by default. With `second_moment=True`, u is further divided by sqrt(b2 v) + eps, where
v <- b2 v + (1 - b2) g^2 (no bias correction, and b2 multiplies v once more, as written in the public PyTorch
ACClip implementation that the clipped-methods authors' StyleGAN code copied as `DefaultACClip`, `mod=1`): an
Adam-like step size on top of the clipping. Their code leaves that choice, a, b1 and b2 to four named variants,
`ACCLIP_VARIANTS`; all of them use eps = 1e-5 and weight decay 1e-5, the defaults here.

Differences from the authors' `DefaultACClip`: their weight decay is added to `.grad` in place (here `.grad` is
left alone; the update is the same), and their `nomom_acclip` entry is a copy of `nomom_paper_acclip`
(a = 1, no second moment), so two names gave one optimizer. Here `nomom_acclip` is what its name says --
`acclip` without momentum (b1 = 0, a = 2, second moment); a run they made with `nomom_acclip` is reproduced by
`nomom_paper_acclip`.
"""

import torch

from ganpatch.clip import group_by_device_and_dtype
from ganpatch.optim_base import ClippedOptimizer, check_nonnegative, checked_betas, params_with_grad, scaled

# name -> the hyperparameters it fixes (the authors' train.py; see the module docstring for nomom_acclip).
ACCLIP_VARIANTS = {
    'acclip': dict(betas=(0.9, 0.99), alpha=2.0, second_moment=True),
    'paper_acclip': dict(betas=(0.9, 0.99), alpha=1.0, second_moment=False),
    'nomom_acclip': dict(betas=(0.0, 0.99), alpha=2.0, second_moment=True),
    'nomom_paper_acclip': dict(betas=(0.0, 0.99), alpha=1.0, second_moment=False),
}


class ACClip(ClippedOptimizer):
    """ACClip (Zhang et al., NeurIPS 2020, Algorithm 2) with per-network clipping; see the module docstring.

    State per parameter: 'exp_avg' (m), 'clip_pow' (tau^a) and, with second_moment and a != 2, 'exp_avg_sq' (v;
    with a = 2, v and tau^2 are the same running average, kept once).
    `clip_options`: clip_mode, clip_threshold, clip_norm_type, clip_norm_eps (see `ClippedOptimizer`).
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-5, alpha=2.0, second_moment=True,
                 **clip_options):
        betas = checked_betas(betas)
        for name, value in [('lr', lr), ('eps', eps), ('weight_decay', weight_decay)]:
            check_nonnegative(name, value)
        if not 1.0 <= alpha <= 2.0:
            raise ValueError(f'Invalid alpha: {alpha!r} (must be in [1, 2])')
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, alpha=float(alpha), second_moment=bool(second_moment))
        super().__init__(params, defaults, **clip_options)

    def _state_of(self, param, separate_second_moment):
        state = self.state[param]
        if len(state) == 0:
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['clip_pow'] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if separate_second_moment and 'exp_avg_sq' not in state:
            state['exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(self, scale):
        for group in self.param_groups:
            params, grads = params_with_grad(group)
            lr, (beta1, beta2), eps, weight_decay = group['lr'], group['betas'], group['eps'], group['weight_decay']
            alpha, second_moment = group['alpha'], group['second_moment']
            states = [self._state_of(param, second_moment and alpha != 2) for param in params] # a = 2: v is tau^2.
            tensors = [params, grads, [s['exp_avg'] for s in states], [s['clip_pow'] for s in states], [s.get('exp_avg_sq') for s in states]]
            for (device_params, device_grads, exp_avgs, clip_pows, exp_avg_sqs), _ in group_by_device_and_dtype(tensors).values():
                device_grads = scaled(device_grads, scale)
                if weight_decay != 0:
                    device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
                torch._foreach_mul_(exp_avgs, beta1)
                torch._foreach_add_(exp_avgs, device_grads, alpha=1 - beta1)
                abs_pows = torch._foreach_abs(device_grads)
                if alpha != 1:
                    torch._foreach_pow_(abs_pows, alpha)
                torch._foreach_mul_(clip_pows, beta2)
                torch._foreach_add_(clip_pows, abs_pows, alpha=1 - beta2)
                taus = clip_pows if alpha == 1 else torch._foreach_sqrt(clip_pows) if alpha == 2 else torch._foreach_pow(clip_pows, 1 / alpha)
                denom = torch._foreach_abs(exp_avgs)
                torch._foreach_add_(denom, eps)
                factors = torch._foreach_div(taus, denom) # min(1, tau / (|m| + eps)) after the clamp.
                torch._foreach_clamp_max_(factors, 1.0)
                if second_moment:
                    if alpha == 2: # v <- b2 v + (1 - b2) g^2 is the running average tau^2 already holds.
                        exp_avg_sqs = clip_pows
                    else:
                        torch._foreach_mul_(exp_avg_sqs, beta2)
                        torch._foreach_addcmul_(exp_avg_sqs, device_grads, device_grads, 1 - beta2)
                    root = torch._foreach_mul(exp_avg_sqs, beta2)
                    torch._foreach_sqrt_(root)
                    torch._foreach_add_(root, eps)
                    torch._foreach_div_(factors, root)
                torch._foreach_addcmul_(device_params, factors, exp_avgs, -lr)
