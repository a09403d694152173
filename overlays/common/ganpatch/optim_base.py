"""The base class of ganpatch's optimizers: one player's gradient clip inside `step()`, and the NaN/inf skip.

Each optimizer clips its own gradients as ONE player (one optimizer per network; Gorbunov et al., NeurIPS 2022,
see `ganpatch.clip`) inside `step()`, so that no call site can forget the clip, then lets the subclass update
the parameters with the clip factor folded in. Non-finite gradients: a step whose gradient holds NaN or inf is
skipped entirely -- parameters and optimizer state untouched, as `torch.amp.GradScaler` does -- and counted in
`opt.skipped_steps`. Deciding this reads the gradient norm on the host once per step; the same norm gives the
clip factor and `opt.last_grad_norm`.
"""

import math

import torch

from ganpatch.clip import check_clip_args, clamp_, global_grad_norm, norm_clip_scale, parse_norm_type, scale_


def params_with_grad(group):
    """(params, grads) of the parameters of a param group that have a gradient."""
    params = [param for param in group['params'] if param.grad is not None]
    return params, [param.grad for param in params]


def check_nonnegative(name, value):
    if not 0.0 <= value:
        raise ValueError(f'Invalid {name}: {value!r} (must be >= 0)')


def checked_betas(betas):
    """`betas` as a tuple of two floats in [0, 1); ValueError otherwise."""
    betas = tuple(float(beta) for beta in betas)
    if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
        raise ValueError(f'Invalid betas: {betas!r} (two numbers in [0, 1))')
    return betas


def scaled(grads, scale):
    """`grads` times the Python number `scale`, as new tensors (the same list when scale is 1)."""
    return torch._foreach_mul(grads, scale) if scale != 1.0 else grads


class ClippedOptimizer(torch.optim.Optimizer):
    """Base class: one player's clip, then the subclass's `_update(scale)`.

    Clip options, keywords of every subclass:
        clip_mode, clip_threshold: 'none' | 'norm' | 'value' and the threshold, as `ganpatch.clip.clip_gradients_`.
        clip_norm_type: the p of the norm that mode 'norm' clips, as `torch.nn.utils.clip_grad_norm_`'s norm_type
            (default 2; inf allowed).
        clip_norm_eps: 0 (default): the norm-clip factor min(1, c / ||g||) is folded into the update as a scalar,
            and `.grad` keeps the raw gradient. > 0: `.grad` is first rescaled in place by
            min(1, c / (||g|| + clip_norm_eps)), exactly as `torch.nn.utils.clip_grad_norm_` does with its fixed
            1e-6, then updated as an unclipped gradient: clip_norm_eps=1e-6 reproduces that function followed by
            the optimizer bit for bit (float32), e.g. for side-by-side runs against code that calls it.
    Attributes:
        last_grad_norm: pre-clip global norm (p = clip_norm_type) of the last gradient read (0-dim tensor), None
            before any step.
        skipped_steps: how many calls were skipped because of a NaN/inf gradient.
    """

    _pickled_attributes = ('clip_mode', 'clip_threshold', 'clip_norm_type', 'clip_norm_eps', 'last_grad_norm', 'skipped_steps')
    clip_norm_type = 2.0 # Class-level defaults, so that optimizers pickled before these options existed still load.
    clip_norm_eps = 0.0

    def __init__(self, params, defaults, clip_mode='none', clip_threshold=None, clip_norm_type=2.0, clip_norm_eps=0.0):
        check_clip_args(clip_mode, clip_threshold, clip_norm_type, clip_norm_eps)
        super().__init__(params, defaults)
        self.clip_mode = clip_mode
        self.clip_threshold = clip_threshold
        self.clip_norm_type = parse_norm_type(clip_norm_type)
        self.clip_norm_eps = float(clip_norm_eps)
        self.last_grad_norm = None
        self.skipped_steps = 0

    def __getstate__(self): # torch.optim.Optimizer pickles only defaults, state and param_groups.
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in self._pickled_attributes})
        return state

    def _grads(self):
        return [grad for group in self.param_groups for grad in params_with_grad(group)[1]]

    def _clip(self):
        """Clip this step's gradients; return the factor to fold into the update, or None to skip the step."""
        grads = self._grads()
        self.last_grad_norm = global_grad_norm(grads, self.clip_norm_type)
        norm = float(self.last_grad_norm) # The one host sync of the step.
        if not math.isfinite(norm):
            self.skipped_steps += 1
            return None
        if self.clip_mode == 'norm':
            scale = norm_clip_scale(self.last_grad_norm, norm, self.clip_threshold, self.clip_norm_eps)
            if self.clip_norm_eps == 0:
                return scale
            if scale != 1.0: # clip_grad_norm_'s arithmetic: rescale .grad, then update with it.
                scale_(grads, scale)
        elif self.clip_mode == 'value':
            clamp_(grads, self.clip_threshold)
        return 1.0

    def _update(self, scale):
        """Move the parameters with gradient `scale * .grad`. Implemented by subclasses."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """Clip the gradients, then update (or skip the step on a NaN/inf gradient)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = self._clip()
        if scale is not None:
            self._update(scale)
        return loss
