"""Gradient clipping of one player (one network), as in clipped SGDA / SEG.

Gorbunov, Danilova, Dobre, Dvurechensky, Gasnikov, Gidel, "Clipped Stochastic Methods for Variational
Inequalities with Heavy-Tailed Noise", NeurIPS 2022 (arXiv 2206.01095), clipping operator:
clip(g, lambda) = min(1, lambda / ||g||_2) * g, with ||g|| ONE L2 norm over all parameters of the player
(not per layer, not over the joint (G, D) vector). Their code also offers coordinate ("value") clipping,
which clamps every entry to [-c, c] and so changes the gradient's direction.

Non-finite policy: a gradient that holds NaN or inf is never rescaled or clamped here (clamping would turn
inf into a finite, plausible-looking value); it is left as it is and the returned norm is non-finite. The
optimizers of `ganpatch.optim` then skip the step entirely.
"""

import math

import torch

CLIP_MODES = ('none', 'norm', 'value')

# Splits parallel tensor lists by (device, dtype), so that each torch._foreach_* call takes its fast path.
group_by_device_and_dtype = torch.optim.Optimizer._group_tensors_by_device_and_dtype


def check_clip_args(mode, threshold):
    """Raise ValueError unless (mode, threshold) is a valid clipping setting."""
    if mode not in CLIP_MODES:
        raise ValueError(f'Unknown clip mode {mode!r}; expected one of {", ".join(CLIP_MODES)}')
    if mode == 'none':
        return
    if threshold is None:
        raise ValueError(f'clip_mode={mode!r} needs a clip threshold')
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f'The clip threshold must be a finite number > 0, got {threshold!r}')


def grads_of(params):
    """The existing `.grad`s of `params` (parameters without a gradient are skipped)."""
    return [param.grad for param in params if param.grad is not None]


def global_grad_norm(grads):
    """One L2 norm over all tensors in `grads`, as a 0-dim tensor (0 when there are none).

    Computed per (device, dtype) group with `torch._foreach_norm`, like `torch.nn.utils.clip_grad_norm_`.
    When the squares overflow although every entry is finite, the norm is recomputed in float64, so that an
    inf norm always means an inf or NaN entry. That check reads the norm on the host (one sync).
    """
    if len(grads) == 0:
        return torch.tensor(0.0)
    norms = []
    for [device_grads], _ in group_by_device_and_dtype([grads]).values():
        norms.extend(torch._foreach_norm(device_grads, 2.0))
    first_device = grads[0].device
    total = torch.linalg.vector_norm(torch.stack([norm.to(first_device, torch.float32) for norm in norms]))
    if not math.isfinite(float(total)) and all_finite(grads):
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grad.double()).to(first_device) for grad in grads]))
        total = total.clamp(max=torch.finfo(torch.float32).max).float()
    return total


def all_finite(grads):
    """True when no tensor in `grads` holds a NaN or inf (host sync)."""
    return all(bool(torch.isfinite(grad).all()) for grad in grads)


def norm_clip_scale(norm, threshold):
    """min(1, lambda / ||g||) for a host-side norm (1 for a zero gradient)."""
    return 1.0 if norm <= threshold else threshold / norm


def clamp_(grads, threshold):
    """Coordinate clipping in place: every entry to [-threshold, threshold]."""
    for [device_grads], _ in group_by_device_and_dtype([grads]).values():
        torch._foreach_clamp_min_(device_grads, -threshold)
        torch._foreach_clamp_max_(device_grads, threshold)


def scale_(grads, scale):
    """Multiply every gradient by the Python number `scale`, in place."""
    for [device_grads], _ in group_by_device_and_dtype([grads]).values():
        torch._foreach_mul_(device_grads, scale)


@torch.no_grad()
def clip_gradients_(params, mode, threshold):
    """Clip, in place, the `.grad`s of `params` as ONE player and return the pre-clip global L2 norm.

    mode 'norm':  g <- min(1, threshold / ||g||) * g  with one L2 norm over all given parameters.
    mode 'value': every entry clamped to [-threshold, threshold].
    mode 'none':  gradients untouched (the norm is still returned, for logging).
    Parameters whose grad is None are skipped. Gradients holding NaN/inf are left untouched and the returned
    norm is then non-finite (see the module docstring). Reads the norm on the host once.
    """
    check_clip_args(mode, threshold)
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    grads = grads_of(params)
    norm = global_grad_norm(grads)
    norm_value = float(norm)
    if mode == 'none' or not math.isfinite(norm_value):
        return norm
    if mode == 'norm':
        scale = norm_clip_scale(norm_value, threshold)
        if scale != 1.0:
            scale_(grads, scale)
    else:
        clamp_(grads, threshold)
    return norm
