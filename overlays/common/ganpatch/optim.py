"""Clipped optimizers for GAN training: SGD, Adam and their stochastic-extragradient (SEG) versions.

Each optimizer clips its own gradients as ONE player (one optimizer per network) inside `step()`, so that no
call site can forget the clip, then updates the parameters with multi-tensor (`torch._foreach_*`) kernels:

- clipped SGDA:  x <- x - lr * clip(g(x; xi))                     (clipped-SGDA, Gorbunov et al., NeurIPS 2022)
- clipped SEG:   x~ = x - lr * clip(g(x; xi1)),
                 x  <- x - lr * clip(g(x~; xi2))                    (clipped-SEG, ibid.), two fresh minibatches.

The norm-clip factor min(1, lambda/||g||) is folded into the update as a Python scalar instead of rewriting
`.grad` (after `step()` the `.grad`s still hold the raw gradient); value clipping clamps `.grad` in place.

Non-finite gradients: a step whose gradient holds NaN or inf is skipped entirely -- parameters and optimizer
state untouched, as `torch.amp.GradScaler` does -- and counted in `opt.skipped_steps`. Deciding this reads the
gradient norm on the host once per step; the same norm gives the clip factor and `opt.last_grad_norm`.
"""

import contextlib
import math

import torch

from ganpatch.clip import check_clip_args, clamp_, global_grad_norm, group_by_device_and_dtype, norm_clip_scale

OPTIMIZERS = ('adam', 'sgd', 'extrasgd', 'extraadam')


def _params_with_grad(group):
    params = [param for param in group['params'] if param.grad is not None]
    return params, [param.grad for param in params]


def _check_nonnegative(name, value):
    if not 0.0 <= value:
        raise ValueError(f'Invalid {name}: {value!r} (must be >= 0)')


class ClippedOptimizer(torch.optim.Optimizer):
    """Base class: one player's clip (`clip_mode`, `clip_threshold`), then the subclass's `_update(scale)`.

    Attributes:
        clip_mode, clip_threshold: as in `ganpatch.clip.clip_gradients_`.
        last_grad_norm: pre-clip global L2 norm of the last gradient read (0-dim tensor), None before any step.
        skipped_steps: how many calls were skipped because of a NaN/inf gradient.
    """

    _pickled_attributes = ('clip_mode', 'clip_threshold', 'last_grad_norm', 'skipped_steps')

    def __init__(self, params, defaults, clip_mode='none', clip_threshold=None):
        check_clip_args(clip_mode, clip_threshold)
        super().__init__(params, defaults)
        self.clip_mode = clip_mode
        self.clip_threshold = clip_threshold
        self.last_grad_norm = None
        self.skipped_steps = 0

    def __getstate__(self): # torch.optim.Optimizer pickles only defaults, state and param_groups.
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in self._pickled_attributes})
        return state

    def _clip(self):
        """Clip this step's gradients; return the factor to fold into the update, or None to skip the step."""
        grads = [grad for group in self.param_groups for grad in _params_with_grad(group)[1]]
        self.last_grad_norm = global_grad_norm(grads)
        norm = float(self.last_grad_norm) # The one host sync of the step.
        if not math.isfinite(norm):
            self.skipped_steps += 1
            return None
        if self.clip_mode == 'norm':
            return norm_clip_scale(norm, self.clip_threshold)
        if self.clip_mode == 'value':
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


class ClippedSGD(ClippedOptimizer):
    """SGD with per-network gradient clipping. Momentum and weight decay behave as in `torch.optim.SGD`
    (no dampening, no Nesterov); the default momentum 0 gives the clipped SGDA of Gorbunov et al. 2022."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, clip_mode='none', clip_threshold=None):
        for name, value in [('lr', lr), ('momentum', momentum), ('weight_decay', weight_decay)]:
            _check_nonnegative(name, value)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay), clip_mode, clip_threshold)

    def _update(self, scale):
        for group in self.param_groups:
            params, grads = _params_with_grad(group)
            lr, momentum, weight_decay = group['lr'], group['momentum'], group['weight_decay']
            bufs = [self.state[param].get('momentum_buffer') for param in params]
            for (device_params, device_grads, device_bufs), indices in group_by_device_and_dtype([params, grads, bufs], with_indices=True).values():
                if momentum == 0 and weight_decay == 0:
                    torch._foreach_add_(device_params, device_grads, alpha=-lr * scale) # The clip folded in.
                    continue
                steps = torch._foreach_mul(device_grads, scale) if scale != 1.0 else device_grads
                if weight_decay != 0:
                    steps = torch._foreach_add(steps, device_params, alpha=weight_decay)
                if momentum != 0:
                    steps = self._momentum(device_bufs, steps, momentum, [params[i] for i in indices])
                torch._foreach_add_(device_params, steps, alpha=-lr)

    def _momentum(self, bufs, steps, momentum, params):
        """buf <- momentum * buf + step (buf = step on the first step), as torch.optim.SGD with dampening 0."""
        if all(buf is not None for buf in bufs):
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, steps)
            return bufs
        for i, (buf, step, param) in enumerate(zip(bufs, steps, params)): # First step of some parameters.
            if buf is None:
                bufs[i] = self.state[param]['momentum_buffer'] = torch.clone(step).detach()
            else:
                buf.mul_(momentum).add_(step)
        return bufs


class ClippedAdam(ClippedOptimizer):
    """Adam (Kingma & Ba 2015) with per-network gradient clipping.

    With clip_mode='none' the update is bit-identical to `torch.optim.Adam(foreach=True)` (same state keys
    'step', 'exp_avg', 'exp_avg_sq', same kernels); weight decay is Adam's L2 form. The norm-clip factor s is
    folded into the moment updates: m <- b1 m + (1-b1) s g,  v <- b2 v + (1-b2) s^2 g^2.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_mode='none', clip_threshold=None):
        betas = tuple(float(beta) for beta in betas)
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f'Invalid betas: {betas!r} (two numbers in [0, 1))')
        for name, value in [('lr', lr), ('eps', eps), ('weight_decay', weight_decay)]:
            _check_nonnegative(name, value)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), clip_mode, clip_threshold)

    def _state_of(self, param):
        state = self.state[param]
        if len(state) == 0: # Same layout as torch.optim.Adam: the step count is a CPU tensor.
            state['step'] = torch.tensor(0.0, dtype=torch.float32)
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(self, scale):
        one = torch.tensor(1.0)
        for group in self.param_groups:
            params, grads = _params_with_grad(group)
            states = [self._state_of(param) for param in params]
            tensors = [params, grads, [s['exp_avg'] for s in states], [s['exp_avg_sq'] for s in states], [s['step'] for s in states]]
            lr, (beta1, beta2), eps, weight_decay = group['lr'], group['betas'], group['eps'], group['weight_decay']
            for (device_params, device_grads, exp_avgs, exp_avg_sqs, steps), _ in group_by_device_and_dtype(tensors).values():
                torch._foreach_add_(steps, one, alpha=1.0)
                grad_scale = scale
                if weight_decay != 0:
                    device_grads = torch._foreach_mul(device_grads, scale) if scale != 1.0 else device_grads
                    device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
                    grad_scale = 1.0
                if grad_scale == 1.0:
                    torch._foreach_lerp_(exp_avgs, device_grads, 1 - beta1)
                else:
                    torch._foreach_mul_(exp_avgs, beta1)
                    torch._foreach_add_(exp_avgs, device_grads, alpha=(1 - beta1) * grad_scale)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, device_grads, device_grads, (1 - beta2) * grad_scale ** 2)
                step_size = [-lr / (1 - beta1 ** step.item()) for step in steps]
                bias_correction2_sqrt = [(1 - beta2 ** step.item()) ** 0.5 for step in steps]
                denom = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_div_(denom, bias_correction2_sqrt)
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_(device_params, exp_avgs, denom, step_size)


class Extragradient:
    """Stochastic extragradient (SEG) on top of a `ClippedOptimizer`'s update rule.

    Usage, per iteration:  gradient on minibatch xi1 -> `opt.extrapolate()`;  gradient at the extrapolated
    point on a fresh minibatch xi2 -> `opt.step()`. Both half-steps clip (Gorbunov et al. 2022, clipped-SEG).
    Both half-steps apply the base optimizer's full update rule, state included: for Adam the moments and the
    step count are updated at the extrapolation and again at the update, as Extra-Adam does (Gidel, Berard,
    Vignoud, Vincent, Lacoste-Julien, "A Variational Inequality Perspective on Generative Adversarial
    Networks", ICLR 2019, their Extra-Adam algorithm).

    - `step()` without a prior `extrapolate()` raises RuntimeError, so a loop that lost the alternation fails
      loudly instead of silently running plain SGDA.
    - NaN/inf gradient at the extrapolation: nothing moves; the following `step()` completes the skipped
      iteration without moving (both calls count in `skipped_steps`).
      NaN/inf gradient at the update: the parameters return to the remembered real iterate x and the update is
      not applied (the extrapolation's state update, made from a finite gradient, stays).
    - `state_dict()` holds the remembered real iterate while extrapolated, so saving the model (at x~) and the
      optimizer in either state and loading both restores the run exactly.
    """

    _pickled_attributes = ClippedOptimizer._pickled_attributes + ('_real_params', '_half_step')

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._real_params = None # Buffers for the remembered x, allocated once.
        self._half_step = None   # None (at a real iterate), 'extrapolated' or 'skipped'.

    @property
    def is_extrapolated(self):
        """True between `extrapolate()` and `step()`: the parameters hold x~, not the real iterate."""
        return self._half_step == 'extrapolated'

    @property
    def real_params(self):
        """The remembered real iterate x (one tensor per parameter, in param-group order) while extrapolated, else None."""
        return list(self._real_params) if self.is_extrapolated else None

    def _all_params(self):
        return [param for group in self.param_groups for param in group['params']]

    def _copy_(self, dst, src):
        for (device_dst, device_src), _ in group_by_device_and_dtype([dst, src]).values():
            torch._foreach_copy_(device_dst, device_src)

    @torch.no_grad()
    def extrapolate(self, closure=None):
        """x~ = x - lr * clip(g(x; xi1)) from the current `.grad`s, remembering x."""
        if self._half_step is not None:
            raise RuntimeError(f'{type(self).__name__}.extrapolate() called twice; call step() after each extrapolate()')
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = self._clip()
        if scale is None:
            self._half_step = 'skipped'
            return loss
        params = self._all_params()
        if self._real_params is None or len(self._real_params) != len(params): # First use, or add_param_group().
            self._real_params = [torch.empty_like(param) for param in params]
        self._copy_(self._real_params, params)
        self._update(scale)
        self._half_step = 'extrapolated'
        return loss

    @torch.no_grad()
    def step(self, closure=None):
        """x <- x - lr * clip(g(x~; xi2)) from the remembered x, with the current `.grad`s (taken at x~)."""
        if self._half_step is None:
            raise RuntimeError(f'{type(self).__name__}.step() needs a prior extrapolate(): compute the gradient on one minibatch, '
                'call extrapolate(), compute the gradient at the extrapolated point on a fresh minibatch, then call step()')
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._half_step == 'skipped':
            self._half_step = None
            self.skipped_steps += 1
            return loss
        scale = self._clip()
        self._copy_(self._all_params(), self._real_params)
        self._half_step = None
        if scale is not None:
            self._update(scale)
        return loss

    @contextlib.contextmanager
    def real_iterate(self):
        """Temporarily put the remembered real iterate x into the parameters (no-op when not extrapolated),
        e.g. for EMA updates, snapshots and metrics. Changes made to the parameters inside are discarded."""
        if not self.is_extrapolated:
            yield
            return
        params = self._all_params()
        with torch.no_grad():
            extrapolated = [param.detach().clone() for param in params]
            self._copy_(params, self._real_params)
        try:
            yield
        finally:
            with torch.no_grad():
                self._copy_(params, extrapolated)

    def state_dict(self):
        state_dict = super().state_dict()
        state_dict['extragradient'] = dict(half_step=self._half_step, real_params=self.real_params)
        return state_dict

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop('extragradient', None) or dict(half_step=None, real_params=None)
        super().load_state_dict(state_dict)
        self._half_step = extra['half_step']
        if self._half_step == 'extrapolated':
            params = self._all_params()
            if self._real_params is None:
                self._real_params = [torch.empty_like(param) for param in params]
            with torch.no_grad():
                for dst, src in zip(self._real_params, extra['real_params'], strict=True):
                    dst.copy_(src)


class ExtraSGD(Extragradient, ClippedSGD):
    """Clipped SEG with SGD half-steps (clipped-SEG of Gorbunov et al. 2022 with the default momentum 0)."""


class ExtraAdam(Extragradient, ClippedAdam):
    """Clipped SEG with Adam half-steps (Extra-Adam of Gidel et al. 2019, plus per-network clipping)."""


def is_extragradient(opt):
    """True for optimizers that need `extrapolate()` before each `step()`."""
    return isinstance(opt, Extragradient)


def build_optimizer(name, params, *, lr, clip_mode='none', clip_threshold=None, betas=(0.9, 0.999), eps=1e-8, momentum=0.0, weight_decay=0.0):
    """One network's optimizer by name ('adam', 'sgd', 'extrasgd', 'extraadam').

    `params` is what torch.optim takes (tensors or param-group dicts). `betas`/`eps` apply to the Adam family,
    `momentum` to the SGD family. Raises ValueError for an unknown name or clip mode, a missing or
    non-positive threshold when clip_mode != 'none', or momentum given to an Adam optimizer.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f'Unknown optimizer {name!r}; expected one of {", ".join(OPTIMIZERS)}')
    check_clip_args(clip_mode, clip_threshold)
    clip = dict(clip_mode=clip_mode, clip_threshold=clip_threshold)
    if name in ('sgd', 'extrasgd'):
        cls = ClippedSGD if name == 'sgd' else ExtraSGD
        return cls(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **clip)
    if momentum != 0:
        raise ValueError(f'momentum applies to sgd/extrasgd; {name} uses betas')
    cls = ClippedAdam if name == 'adam' else ExtraAdam
    return cls(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **clip)
