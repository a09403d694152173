"""Gradient clipping of one player (one network), as in clipped SGDA / SEG.

Gorbunov, Danilova, Dobre, Dvurechensky, Gasnikov, Gidel, "Clipped Stochastic Methods for Variational
Inequalities with Heavy-Tailed Noise", NeurIPS 2022 (arXiv 2206.01095), clipping operator:
clip(g, lambda) = min(1, lambda / ||g||) * g, with ||g|| ONE norm over all parameters of the player (not per
layer, not over the joint (G, D) vector). The paper's norm is L2; `norm_type` selects another p-norm as
`torch.nn.utils.clip_grad_norm_(norm_type=p)` does (p >= 1 or inf; the authors' StyleGAN code exposes it as
--clip-norm-type). Their code also offers coordinate ("value") clipping, which clamps every entry to [-c, c] and
so changes the gradient's direction.

Norm-clip arithmetic: by default the factor is min(1, lambda / ||g||), exactly 1 when ||g|| <= lambda.
`torch.nn.utils.clip_grad_norm_` (which the authors' code calls) uses min(1, lambda / (||g|| + 1e-6)) instead,
so it also slightly shrinks a gradient whose norm is less than 1e-6 below the threshold; `norm_eps=1e-6`
reproduces its numbers bit for bit (float32 gradients), for side-by-side runs against that code.

Non-finite policy: a gradient that holds NaN or inf is never rescaled or clamped here (clamping would turn
inf into a finite, plausible-looking value); it is left as it is and the returned norm is non-finite. The
optimizers of `ganpatch.optim` then skip the step entirely.
"""

import math

import torch

CLIP_MODES = ('none', 'norm', 'value')

# Splits parallel tensor lists by (device, dtype), so that each torch._foreach_* call takes its fast path.
group_by_device_and_dtype = torch.optim.Optimizer._group_tensors_by_device_and_dtype


def parse_norm_type(norm_type):
    """The p of a p-norm as a float: a number, or a string that float() reads ('2', 'inf'); p >= 1 or inf."""
    try:
        p = float(norm_type) if not isinstance(norm_type, bool) else math.nan
    except (TypeError, ValueError):
        p = math.nan
    if not p >= 1: # Also rejects NaN.
        raise ValueError(f'The clip norm type must be a number >= 1 or inf, got {norm_type!r}')
    return p


def check_clip_args(mode, threshold, norm_type=2.0, norm_eps=0.0):
    """Raise ValueError unless (mode, threshold, norm_type, norm_eps) is a valid clipping setting.

    `norm_type` and `norm_eps` shape norm clipping only, so values other than their defaults (2, 0) need
    mode 'norm'.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f'Unknown clip mode {mode!r}; expected one of {", ".join(CLIP_MODES)}')
    p = parse_norm_type(norm_type)
    if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not 0 <= norm_eps < math.inf:
        raise ValueError(f'The clip norm eps must be a finite number >= 0, got {norm_eps!r}')
    if mode != 'norm' and (p != 2 or norm_eps != 0):
        raise ValueError(f'A clip norm type or norm eps applies to clip mode \'norm\', not {mode!r}')
    if mode == 'none':
        return
    if threshold is None:
        raise ValueError(f'clip_mode={mode!r} needs a clip threshold')
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f'The clip threshold must be a finite number > 0, got {threshold!r}')


def grads_of(params):
    """The existing `.grad`s of `params` (parameters without a gradient are skipped)."""
    return [param.grad for param in params if param.grad is not None]


def global_grad_norm(grads, norm_type=2.0):
    """One p-norm (default L2) over all tensors in `grads`, as a 0-dim tensor (0 when there are none).

    Computed per (device, dtype) group with `torch._foreach_norm`, like `torch.nn.utils.clip_grad_norm_`.
    When the norm overflows although every entry is finite, it is recomputed in float64 (and capped at the
    float32 maximum), so that an inf norm always means an inf or NaN entry. That check reads the norm on the
    host (one sync).
    """
    if len(grads) == 0:
        return torch.tensor(0.0)
    norms = []
    for [device_grads], _ in group_by_device_and_dtype([grads]).values():
        norms.extend(torch._foreach_norm(device_grads, norm_type))
    first_device = grads[0].device
    total = torch.linalg.vector_norm(torch.stack([norm.to(first_device, torch.float32) for norm in norms]), norm_type)
    if not math.isfinite(float(total)) and all_finite(grads):
        norms = [torch.linalg.vector_norm(grad.double(), norm_type).to(first_device) for grad in grads]
        total = torch.linalg.vector_norm(torch.stack(norms), norm_type).clamp(max=torch.finfo(torch.float32).max).float()
    return total


def all_finite(grads):
    """True when no tensor in `grads` holds a NaN or inf (host sync)."""
    return all(bool(torch.isfinite(grad).all()) for grad in grads)


def norm_clip_scale(norm, norm_value, threshold, eps=0.0):
    """The factor that norm clipping multiplies a gradient of norm `norm` (0-dim tensor; `norm_value` = its
    host value) by.

    eps == 0 (ganpatch): min(1, threshold / ||g||), computed on the host in float64; exactly 1 when
    ||g|| <= threshold, so a gradient below the threshold is never touched.
    eps > 0: min(1, threshold / (||g|| + eps)), with the tensor operations of
    `torch.nn.utils.clip_grad_norm_` (eps = 1e-6 there) in the norm's dtype, so that multiplying the gradient
    by it gives that function's result bit for bit. Costs a second host read of a 0-dim tensor.
    """
    if eps == 0:
        return 1.0 if norm_value <= threshold else threshold / norm_value
    return float(torch.clamp(float(threshold) / (norm + eps), max=1.0))


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
def clip_gradients_(params, mode, threshold, norm_type=2.0, norm_eps=0.0):
    """Clip, in place, the `.grad`s of `params` as ONE player and return the pre-clip global norm.

    mode 'norm':  g <- min(1, threshold / ||g||_p) * g  with one p-norm (p = `norm_type`, default 2) over all
                  given parameters; with `norm_eps` > 0, min(1, threshold / (||g||_p + norm_eps)) computed as
                  `torch.nn.utils.clip_grad_norm_` does (norm_eps=1e-6 reproduces it bit for bit).
    mode 'value': every entry clamped to [-threshold, threshold].
    mode 'none':  gradients untouched (the L2 norm is still returned, for logging).
    Parameters whose grad is None are skipped. Gradients holding NaN/inf are left untouched and the returned
    norm is then non-finite (see the module docstring). Reads the norm on the host once (twice with norm_eps).
    """
    check_clip_args(mode, threshold, norm_type, norm_eps)
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    grads = grads_of(params)
    norm = global_grad_norm(grads, parse_norm_type(norm_type))
    norm_value = float(norm)
    if mode == 'none' or not math.isfinite(norm_value):
        return norm
    if mode == 'norm':
        scale = norm_clip_scale(norm, norm_value, threshold, norm_eps)
        if scale != 1.0:
            scale_(grads, scale)
    else:
        clamp_(grads, threshold)
    return norm
