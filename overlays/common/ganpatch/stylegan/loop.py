"""Phase-loop helpers for the StyleGAN trees' training_loop.py (stylegan3 and stylegan2-ada).

Upstream's loop runs phases (Gmain, Greg, Dmain, Dreg; or Gboth, Dboth): each forms one network's gradient
over all accumulation rounds, averages it across GPUs, and calls `opt.step()`. The trees differ in how the
gradient is formed and averaged (stylegan3: a manual flat all-reduce; stylegan2-ada: DDP inside the last
round's backward), so each tree passes that as `compute_gradient`; what happens around it is here:

- clipping happens inside `opt.step()` of ganpatch's optimizers, i.e. after the all-reduce (every rank clips
  the same averaged gradient, so the ranks stay identical), after the penalties and the lazy-regularization
  gain;
- stochastic extragradient (clipped SEG, Gorbunov et al., NeurIPS 2022, arXiv 2206.01095):
      x~ = x - lr * clip(g(x; xi1)),   x <- x - lr * clip(g(x~; xi2)),
  with xi1 a freshly drawn minibatch and xi2 the phase's own, so each update uses two independent minibatches;
- --log-update-norm reports ||x_new - x|| of every update, and --log-grad keeps the raw gradient of each
  network's main phase on the last minibatch of a tick for TensorBoard histograms (`GradientHistograms`).
  Both cost nothing when off.
"""

import numpy as np
import torch

import ganpatch.optim


def draw_phase_minibatch(iterator, training_set, *, batch_size, batch_gpu, z_dim, device):
    """A fresh minibatch for one phase, drawn as upstream's loop draws them: (real_img, real_c, gen_z, gen_c),
    each a tuple of per-round chunks of `batch_gpu` (images scaled to [-1, 1])."""
    real_img, real_c = next(iterator)
    real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
    real_c = real_c.to(device).split(batch_gpu)
    gen_z = torch.randn([batch_size, z_dim], device=device).split(batch_gpu)
    gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(batch_size)]
    gen_c = torch.from_numpy(np.stack(gen_c)).to(device).split(batch_gpu)
    return real_img, real_c, gen_z, gen_c


def lazy_regularization_kwargs(opt_kwargs, mb_ratio):
    """Optimizer kwargs for lazy regularization (Karras et al., StyleGAN2, appendix B): the lr times
    mb_ratio = interval / (interval + 1) for every optimizer (as upstream does for Adam and the clipped-methods
    code did for SGD), and the betas to the power mb_ratio wherever there are betas: Adam's, and ACClip's two
    running averages (momentum and the clipping threshold's moment, Zhang et al., NeurIPS 2020, Alg. 2), as the
    clipped-methods authors' StyleGAN code did for every optimizer with betas. beta^mb_ratio per step keeps each
    average's decay per minibatch when a regularization step comes every `interval` minibatches; beta = 0 stays 0.
    SGD's momentum (0 in StyleGAN runs) is not rescaled, as theirs."""
    opt_kwargs = dict(opt_kwargs)
    opt_kwargs['lr'] = opt_kwargs['lr'] * mb_ratio
    if 'betas' in opt_kwargs:
        opt_kwargs['betas'] = [beta ** mb_ratio for beta in opt_kwargs['betas']]
    return opt_kwargs


def update_phase(name, opt, compute_gradient, minibatch, draw_minibatch, report, capture_gradient=None, report_update_norm=False):
    """One phase's update with any optimizer.

    `compute_gradient(real_img, real_c, gen_z, gen_c)` leaves the phase's gradient, averaged across processes,
    in `.grad`; `minibatch` is the phase's own minibatch; `draw_minibatch()` draws a fresh one (only SEG calls
    it). The pre-clip gradient norm of ganpatch's optimizers is reported as `Grad/<name>_norm` via `report`.
    `capture_gradient(flat)`, when given, receives a copy of the raw gradient that `opt.step()` gets (averaged
    across processes, before any clipping; for SEG the gradient at the extrapolated point), flattened over the
    parameters that have one. With `report_update_norm`, ||x_new - x||_2 over the optimizer's parameters, x the
    iterate before the phase (for SEG the real iterate, not the extrapolated point), is reported as
    `Update/<name>_norm`.
    """
    before = [param.detach().clone() for param in _params(opt)] if report_update_norm else None
    if ganpatch.optim.is_extragradient(opt):
        compute_gradient(*draw_minibatch())
        with torch.autograd.profiler.record_function(name + '_extrapolate'):
            opt.extrapolate()
    compute_gradient(*minibatch)
    if capture_gradient is not None:
        capture_gradient(torch.cat([param.grad.detach().flatten() for param in _params(opt) if param.grad is not None]))
    with torch.autograd.profiler.record_function(name + '_opt'):
        opt.step() # ganpatch's optimizers clip here, after everything that formed the gradient.
        if getattr(opt, 'last_grad_norm', None) is not None:
            report('Grad/' + name + '_norm', opt.last_grad_norm)
    if before is not None:
        report('Update/' + name + '_norm', update_norm(before, _params(opt)))


def _params(opt):
    return [param for group in opt.param_groups for param in group['params']]


@torch.no_grad()
def update_norm(before, after):
    """||after - before||_2 over all tensors together (one L2 norm of the whole update), as a 0-dim tensor."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(a.detach() - b) for a, b in zip(after, before, strict=True)]))


def ends_tick(cur_nimg, batch_size, cur_tick, tick_start_nimg, kimg_per_tick, total_kimg):
    """Whether the iteration about to run is the last of its tick: the training loop's tick condition evaluated
    for cur_nimg + batch_size (the first iteration always ends tick 0; the last one ends the run)."""
    next_nimg = cur_nimg + batch_size
    return cur_tick == 0 or next_nimg >= total_kimg * 1000 or next_nimg >= tick_start_nimg + kimg_per_tick * 1000


class GradientHistograms:
    """--log-grad: TensorBoard histograms of raw gradients, as the clipped-methods authors' StyleGAN code wrote them.

    Per network, the flattened gradient of its main phase (Gmain or Gboth, Dmain or Dboth) on the last minibatch
    of a tick, written at the tick's end as `Histogram/G_grads` and `Histogram/D_grads` with 150 bins, at
    global step kimg (their tags, bins and step). Theirs flattened every phase of the minibatch together, but the
    regularization phases always failed to flatten (some parameters get no gradient from the penalty), so only the
    main phases ever reached their histograms; here that is what is logged. The gradient is the raw one, before
    clipping and after the all-reduce (theirs: after their clip, before the all-reduce, i.e. rank 0's own).
    """

    MAIN_PHASES = {'Gmain': 'G', 'Gboth': 'G', 'Dmain': 'D', 'Dboth': 'D'}
    BINS = 150

    def __init__(self):
        self.gradients = {}

    def capture(self, phase_name):
        """A `capture_gradient` for `update_phase` if `phase_name` is a main phase, else None."""
        network = self.MAIN_PHASES.get(phase_name)
        if network is None:
            return None
        return lambda flat: self.gradients.__setitem__(network, flat)

    def write(self, writer, global_step, walltime):
        """Write and forget the captured gradients (`writer`: a TensorBoard SummaryWriter)."""
        for network, flat in sorted(self.gradients.items()):
            writer.add_histogram(f'Histogram/{network}_grads', flat.cpu(), bins=self.BINS, global_step=global_step, walltime=walltime)
        self.gradients = {}


def check_real_iterates(optimizers):
    """Assert that no optimizer holds extrapolated weights (before EMA updates, snapshots and metrics)."""
    extrapolated = [type(opt).__name__ for opt in optimizers if getattr(opt, 'is_extrapolated', False)]
    assert not extrapolated, f'extrapolated weights outside a phase: {extrapolated}'
