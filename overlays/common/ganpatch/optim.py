"""Clipped optimizers for GAN training, one per network (one player), and `build_optimizer` to pick one by name.

Every optimizer clips its own gradient inside `step()` (`ganpatch.optim_base.ClippedOptimizer`: norm or value
clipping, NaN/inf steps skipped and counted) and then applies its update rule with multi-tensor
(`torch._foreach_*`) kernels. With g = clip(g(x; xi)) the clipped stochastic gradient:

- sgd:              x <- x - lr * g                                 (clipped-SGDA, Gorbunov et al., NeurIPS 2022)
- extrasgd:         x~ = x - lr * g(x; xi1),  x <- x - lr * g(x~; xi2)   (clipped-SEG, ibid.; two fresh minibatches)
- adam, extraadam:  Adam (Kingma & Ba 2015) steps, alone or as both SEG half-steps (Extra-Adam, Gidel et al. 2019)
- norm_sgd:         x <- x - lr * g / sqrt(eps + ||g||^2)             (normalized SGD; `NormalizedSGD`)
- optimistic_adam:  x <- x - 2 lr d_t + lr d_{t-1}, d = Adam's direction (Daskalakis et al., ICLR 2018)
- acclip and its variants: adaptive coordinate clipping (Zhang et al., NeurIPS 2020; `ganpatch.acclip`).

`ALIASES` maps other accepted spellings to the names of `OPTIMIZERS` (the clipped-methods authors' StyleGAN code
called the SEG optimizers `extra_sgd` / `extra_adam`); `canonical_name()` resolves them.
"""

import contextlib
import inspect
import math

import torch

from ganpatch.acclip import ACCLIP_VARIANTS, ACClip
from ganpatch.clip import check_clip_args, global_grad_norm, group_by_device_and_dtype
from ganpatch.optim_base import ClippedOptimizer, check_nonnegative, checked_betas, params_with_grad, scaled


class ClippedSGD(ClippedOptimizer):
    """SGD with per-network gradient clipping. Momentum and weight decay behave as in `torch.optim.SGD`
    (no dampening, no Nesterov); the default momentum 0 gives the clipped SGDA of Gorbunov et al. 2022.
    `clip_options`: clip_mode, clip_threshold, clip_norm_type, clip_norm_eps (see `ClippedOptimizer`)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, **clip_options):
        for name, value in [('lr', lr), ('momentum', momentum), ('weight_decay', weight_decay)]:
            check_nonnegative(name, value)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay), **clip_options)

    def _update(self, scale):
        for group in self.param_groups:
            params, grads = params_with_grad(group)
            lr, momentum, weight_decay = group['lr'], group['momentum'], group['weight_decay']
            bufs = [self.state[param].get('momentum_buffer') for param in params]
            for (device_params, device_grads, device_bufs), indices in group_by_device_and_dtype([params, grads, bufs], with_indices=True).values():
                if momentum == 0 and weight_decay == 0:
                    torch._foreach_add_(device_params, device_grads, alpha=-lr * scale) # The clip folded in.
                    continue
                steps = scaled(device_grads, scale)
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


class NormalizedSGD(ClippedSGD):
    """Normalized SGD with per-network clipping: x <- x - lr * g / sqrt(eps + ||g||_2^2), g the clipped gradient.

    Normalized gradient descent (e.g. Hazan, Levy, Shalev-Shwartz, "Beyond Convexity: Stochastic Quasi-Convex
    Optimization", NeurIPS 2015; Cutkosky & Mehta, "Momentum Improves Normalized SGD", ICML 2020): every step
    has length lr, whatever the gradient's scale. ||g|| is ONE L2 norm over all the optimizer's parameters (the
    network), and eps = 1e-8 sits inside the square root, as in the clipped-methods authors' StyleGAN
    `NormalizedSGD` (which takes the norm per param group -- the same thing there, where each network's
    optimizer has one group -- and divides `.grad` in place; here `.grad` is left alone). Momentum and weight
    decay then act on the normalized gradient as in `torch.optim.SGD` (their defaults: 0). A zero gradient
    does not move. With clip_mode='norm' the clip only rescales g, which the normalization undoes (up to eps);
    value clipping changes g's direction before it is normalized.

    The authors' class no longer runs on today's torch: it calls `torch.optim._functional.sgd` without the
    `maximize` argument that torch 1.11 made mandatory (TypeError at the first step).
    """

    _pickled_attributes = ClippedSGD._pickled_attributes + ('eps',)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, eps=1e-8, **clip_options):
        check_nonnegative('eps', eps)
        super().__init__(params, lr, momentum=momentum, weight_decay=weight_decay, **clip_options)
        self.eps = eps

    def _update(self, scale):
        norm = self._clipped_norm(scale)
        super()._update(scale / math.sqrt(self.eps + norm * norm) if norm > 0 else 0.0)

    def _clipped_norm(self, scale):
        """L2 norm of the clipped gradient scale * .grad (reuses the clip's norm when that was the L2 norm of .grad)."""
        if self.clip_mode == 'none' or (self.clip_mode == 'norm' and self.clip_norm_type == 2 and self.clip_norm_eps == 0):
            return scale * float(self.last_grad_norm)
        return scale * float(global_grad_norm(self._grads()))


class ClippedAdam(ClippedOptimizer):
    """Adam (Kingma & Ba 2015) with per-network gradient clipping.

    With clip_mode='none' the update is bit-identical to `torch.optim.Adam(foreach=True)` (same state keys
    'step', 'exp_avg', 'exp_avg_sq', same kernels); weight decay is Adam's L2 form. The norm-clip factor s is
    folded into the moment updates: m <- b1 m + (1-b1) s g,  v <- b2 v + (1-b2) s^2 g^2.
    `clip_options`: clip_mode, clip_threshold, clip_norm_type, clip_norm_eps (see `ClippedOptimizer`).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **clip_options):
        betas = checked_betas(betas)
        for name, value in [('lr', lr), ('eps', eps), ('weight_decay', weight_decay)]:
            check_nonnegative(name, value)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), **clip_options)

    def _state_of(self, param):
        state = self.state[param]
        if len(state) == 0: # Same layout as torch.optim.Adam: the step count is a CPU tensor.
            state['step'] = torch.tensor(0.0, dtype=torch.float32)
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _moments(self, scale):
        """Advance the step counts and both moments with the gradient scale * .grad (+ L2 weight decay).

        Yields, per param group and (device, dtype): (group, params, exp_avgs, denom, bias_corrections1), where
        denom = sqrt(v / (1 - b2^t)) + eps and bias_corrections1 = [1 - b1^t], so that Adam's direction is
        m_hat / (sqrt(v_hat) + eps) = exp_avg / (bias_correction1 * denom).
        """
        one = torch.tensor(1.0)
        for group in self.param_groups:
            params, grads = params_with_grad(group)
            states = [self._state_of(param) for param in params]
            tensors = [params, grads, [s['exp_avg'] for s in states], [s['exp_avg_sq'] for s in states], [s['step'] for s in states]]
            (beta1, beta2), eps, weight_decay = group['betas'], group['eps'], group['weight_decay']
            for (device_params, device_grads, exp_avgs, exp_avg_sqs, steps), _ in group_by_device_and_dtype(tensors).values():
                torch._foreach_add_(steps, one, alpha=1.0)
                grad_scale = scale
                if weight_decay != 0:
                    device_grads = torch._foreach_add(scaled(device_grads, scale), device_params, alpha=weight_decay)
                    grad_scale = 1.0
                if grad_scale == 1.0:
                    torch._foreach_lerp_(exp_avgs, device_grads, 1 - beta1)
                else:
                    torch._foreach_mul_(exp_avgs, beta1)
                    torch._foreach_add_(exp_avgs, device_grads, alpha=(1 - beta1) * grad_scale)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, device_grads, device_grads, (1 - beta2) * grad_scale ** 2)
                bias_corrections1 = [1 - beta1 ** step.item() for step in steps]
                bias_correction2_sqrt = [(1 - beta2 ** step.item()) ** 0.5 for step in steps]
                denom = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_div_(denom, bias_correction2_sqrt)
                torch._foreach_add_(denom, eps)
                yield group, device_params, exp_avgs, denom, bias_corrections1

    def _update(self, scale):
        for group, params, exp_avgs, denom, bias_corrections1 in self._moments(scale):
            torch._foreach_addcdiv_(params, exp_avgs, denom, [-group['lr'] / correction for correction in bias_corrections1])


class OptimisticAdam(ClippedAdam):
    """Optimistic Adam with per-network clipping: Daskalakis, Ilyas, Syrgkanis, Zeng, "Training GANs with
    Optimism", ICLR 2018, Algorithm 1 (Optimistic ADAM).

    Moments and bias corrections as Adam; with d_t = m_hat_t / (sqrt(v_hat_t) + eps) Adam's direction,
        x_t = x_{t-1} - 2 lr d_t + lr d_{t-1},    d_0 = 0 (so the first step is twice Adam's),
    i.e. Adam's step plus the optimistic correction lr (d_{t-1} - d_t), which damps the rotation of
    simultaneous gradient play: on bilinear games it settles near the equilibrium where GDA and Adam cycle or
    diverge (for its SGD counterpart, optimistic mirror descent, the paper proves last-iterate convergence on
    bilinear games; Adam's steps keep a length ~lr, so here it settles within a few lr). One gradient per iteration (d_{t-1} is remembered in the state 'previous_direction'), so this is
    NOT an extragradient method: call `step()` once per iteration, like Adam.

    The clipped-methods authors' StyleGAN `OptimisticAdam` never trained: their training loop lists it among
    the extragradient optimizers and calls `opt.extrapolation()` before every phase, a method the class does
    not have (AttributeError at the first iteration). Its `step()` also returned at the first parameter
    without a gradient (`return` for `continue`), leaving every later parameter unchanged, and it adds eps to
    sqrt(v) before the bias correction (eps / sqrt(1 - b2^t) relative to sqrt(v_hat)); here eps is added to
    sqrt(v_hat), as in the paper's Algorithm 1 and `torch.optim.Adam`. The paper's own Keras code applies the
    current step's bias correction to both terms; here d_{t-1} keeps its own, as Algorithm 1 writes it.
    """

    def _state_of(self, param):
        state = self.state[param]
        if len(state) == 0:
            super()._state_of(param)
            state['previous_direction'] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(self, scale):
        for group, params, exp_avgs, denom, bias_corrections1 in self._moments(scale):
            directions = torch._foreach_div(exp_avgs, denom)
            torch._foreach_div_(directions, bias_corrections1)
            previous = [self.state[param]['previous_direction'] for param in params]
            torch._foreach_add_(params, directions, alpha=-2 * group['lr'])
            torch._foreach_add_(params, previous, alpha=group['lr'])
            torch._foreach_copy_(previous, directions)


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


# Optimizer names: each maps to a class and the defaults that the name sets (the ACClip variants).
_REGISTRY = {
    'adam': (ClippedAdam, {}),
    'sgd': (ClippedSGD, {}),
    'extrasgd': (ExtraSGD, {}),
    'extraadam': (ExtraAdam, {}),
    'norm_sgd': (NormalizedSGD, {}),
    'optimistic_adam': (OptimisticAdam, {}),
    **{name: (ACClip, variant) for name, variant in ACCLIP_VARIANTS.items()},
}
OPTIMIZERS = tuple(_REGISTRY) # The canonical names.
ALIASES = {'extra_sgd': 'extrasgd', 'extra_adam': 'extraadam'} # Other accepted spellings (the authors' StyleGAN names).
OPTIMIZER_CHOICES = OPTIMIZERS + tuple(ALIASES) # Every accepted name, for a CLI's list of choices.

# Accepted and ignored, so that callers written for the first four optimizers keep working: they pass Adam's
# betas (and eps) whatever the optimizer, and momentum=0 to every optimizer. norm_sgd takes its own eps.
_IGNORED = {'sgd': ('betas', 'eps'), 'extrasgd': ('betas', 'eps'), 'norm_sgd': ('betas',)}


def canonical_name(name):
    """The name in `OPTIMIZERS` for `name` or one of its `ALIASES`; ValueError for anything else."""
    if name in ALIASES:
        return ALIASES[name]
    if name not in _REGISTRY:
        raise ValueError(f'Unknown optimizer {name!r}; expected one of {describe_choices()}')
    return name


def describe_choices():
    """The accepted names for a help text, each optimizer once: 'adam, sgd, extrasgd (alias extra_sgd), ...'."""
    aliases = {canonical: alias for alias, canonical in ALIASES.items()}
    return ', '.join(f'{name} (alias {aliases[name]})' if name in aliases else name for name in OPTIMIZERS)


def default_hyperparameters(name):
    """{hyperparameter: default} of optimizer `name` (or an alias): the keywords `build_optimizer` passes on to it
    besides lr and the clip options, with the values it uses when they are not given."""
    cls, variant = _REGISTRY[canonical_name(name)]
    init = next(vars(klass)['__init__'] for klass in cls.__mro__ if klass is not Extragradient and '__init__' in vars(klass))
    return {param.name: variant.get(param.name, param.default) for param in list(inspect.signature(init).parameters.values())[2:]
            if param.kind is param.POSITIONAL_OR_KEYWORD and param.name != 'lr'}


def takes_adam_hyperparameters(name):
    """Whether an upstream's Adam betas and eps (its command-line or config values) reach optimizer `name`: the Adam
    family (adam, extraadam, optimistic_adam). The SGD family takes no betas, and each ACClip variant fixes its own
    betas and eps by name (nomom_*: beta1 = 0), so a target's Adam settings must not overwrite them."""
    name = canonical_name(name)
    return 'betas' in default_hyperparameters(name) and name not in ACCLIP_VARIANTS


def build_optimizer(name, params, *, lr, clip_mode='none', clip_threshold=None, clip_norm_type=2.0, clip_norm_eps=0.0,
                    upstream_adam=None, **hyperparameters):
    """One network's optimizer by name: one of `OPTIMIZERS` or `ALIASES`.

    `params` is what torch.optim takes (tensors or param-group dicts). Clipping, as one player over the whole
    network (see `ganpatch.optim_base.ClippedOptimizer`): `clip_mode` 'none' | 'norm' | 'value' with
    `clip_threshold`; `clip_norm_type` the p of the clipped norm (2, inf, any p >= 1; 'norm' only);
    `clip_norm_eps` 0 (ours: min(1, c/||g||) folded into the step) or > 0 (torch's clip_grad_norm_ arithmetic:
    1e-6 reproduces it bit for bit; 'norm' only).

    `hyperparameters` are the optimizer's own keywords, listed with their defaults by
    `default_hyperparameters(name)` (e.g. betas, eps, weight_decay for adam; momentum, weight_decay for sgd);
    those not given keep those defaults. For backward compatibility, the SGD family (sgd, extrasgd, norm_sgd)
    ignores `betas`, sgd/extrasgd ignore `eps` too (norm_sgd has its own), and every optimizer accepts momentum=0.
    `upstream_adam` holds the calling upstream's Adam settings (e.g. dict(betas=(0, 0.99), eps=1e-8)): they reach
    the Adam family only (`takes_adam_hyperparameters`), so that the other optimizers keep their own; keywords in
    `hyperparameters` take precedence over them.

    Raises ValueError for an unknown name, clip mode or hyperparameter, a missing, non-positive or non-finite
    threshold when clip_mode != 'none', a norm type or eps with another clip mode, and invalid hyperparameter
    values.
    """
    name = canonical_name(name)
    if upstream_adam and takes_adam_hyperparameters(name):
        hyperparameters = {**upstream_adam, **hyperparameters}
    check_clip_args(clip_mode, clip_threshold, clip_norm_type, clip_norm_eps)
    accepted = default_hyperparameters(name)
    hyperparameters = {key: value for key, value in hyperparameters.items()
                       if key not in _IGNORED.get(name, ()) and not (key == 'momentum' and value == 0 and key not in accepted)}
    for key in hyperparameters:
        if key not in accepted:
            takers = [other for other in OPTIMIZERS if key in default_hyperparameters(other)]
            where = f'applies to {", ".join(takers)}' if takers else 'is not a hyperparameter of any optimizer'
            raise ValueError(f'{key} {where}; {name} takes {", ".join(accepted)}')
    cls, variant = _REGISTRY[name]
    return cls(params, lr=lr, clip_mode=clip_mode, clip_threshold=clip_threshold, clip_norm_type=clip_norm_type,
               clip_norm_eps=clip_norm_eps, **{**variant, **hyperparameters})
