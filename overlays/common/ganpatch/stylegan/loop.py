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
  with xi1 a freshly drawn minibatch and xi2 the phase's own, so each update uses two independent minibatches.
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
    code did for SGD), and Adam's betas to the power mb_ratio where there are betas."""
    opt_kwargs = dict(opt_kwargs)
    opt_kwargs['lr'] = opt_kwargs['lr'] * mb_ratio
    if 'betas' in opt_kwargs:
        opt_kwargs['betas'] = [beta ** mb_ratio for beta in opt_kwargs['betas']]
    return opt_kwargs


def update_phase(name, opt, compute_gradient, minibatch, draw_minibatch, report):
    """One phase's update with any optimizer.

    `compute_gradient(real_img, real_c, gen_z, gen_c)` leaves the phase's gradient, averaged across processes,
    in `.grad`; `minibatch` is the phase's own minibatch; `draw_minibatch()` draws a fresh one (only SEG calls
    it). The pre-clip gradient norm of ganpatch's optimizers is reported as `Grad/<name>_norm` via `report`.
    """
    if ganpatch.optim.is_extragradient(opt):
        compute_gradient(*draw_minibatch())
        with torch.autograd.profiler.record_function(name + '_extrapolate'):
            opt.extrapolate()
    compute_gradient(*minibatch)
    with torch.autograd.profiler.record_function(name + '_opt'):
        opt.step() # ganpatch's optimizers clip here, after everything that formed the gradient.
        if getattr(opt, 'last_grad_norm', None) is not None:
            report('Grad/' + name + '_norm', opt.last_grad_norm)


def check_real_iterates(optimizers):
    """Assert that no optimizer holds extrapolated weights (before EMA updates, snapshots and metrics)."""
    extrapolated = [type(opt).__name__ for opt in optimizers if getattr(opt, 'is_extrapolated', False)]
    assert not extrapolated, f'extrapolated weights outside a phase: {extrapolated}'
