"""Discretization drift of two-player games: drift coefficients, explicit regularizers and their gradients.

Rosca, Wu, Dherin, Barrett, "Discretization Drift in Two-Player Games", ICML 2021 (arXiv 2105.13922), and the
authors' JAX code (google-deepmind/discretisation_drift, `dd_two_player_games/`: `drift_utils.get_dd_coeffs`,
`regularizer_estimates.py`, `gan_grads_calculator.py`), restated here in PyTorch.

The game. Player 'disc' (parameters phi, loss L1) and player 'gen' (theta, L2) each descend their own loss with
learning rates alpha and lambda. Gradient descent is an Euler discretization of the flow
phi' = -grad_phi L1, theta' = -grad_theta L2, and by backward error analysis its iterates follow, to first order
in the learning rates, a *modified flow* that adds three kinds of term per player p (the other player is q):

  term            regularizer R_p (only grad_p R_p is used)         grad_p R_p
  self_norm       1/2 ||grad_p L_p||^2                              (d grad_p L_p / dp)^T grad_p L_p
  other_norm      1/2 ||grad_q L_q||^2                              (d grad_q L_q / dp)^T grad_q L_q
  other_dot_prod  <grad_q L_p, sg(grad_q L_q)>   (sg: stop-gradient)  (d grad_q L_p / dp)^T grad_q L_q

  modified flow:  p' = -grad_p L_p - sum_term c_p[term] grad_p R_p[term]

with the *drift coefficients* c of `drift_coefficients`. For simultaneous updates (the paper's modified flow of
simultaneous Euler updates) c_disc = (self_norm alpha/2, other_norm 0, other_dot_prod alpha/2), i.e.
phi' = -grad L1 - (alpha/4) grad ||grad_phi L1||^2 - (alpha/2) grad_phi <grad_theta L1, sg(grad_theta L2)>, and
likewise for theta with lambda. For alternating updates the second player's interaction coefficient becomes
-(lambda/2)(2 alpha/lambda - 1) (the paper's modified flow of alternating Euler updates).

Explicit regularization adds coefficient * grad_p R_p to player p's gradient, per term, with
coefficient = multiplier * drift coefficient + explicit constant (the authors' `dd_coeffs_multiplier` and
`explicit_non_dd_coeffs`): multiplier -1 cancels a drift term, +1 doubles it. `PRESETS`:
  cancel-interaction                  multiplier other_dot_prod = -1 for both players
  cancel-interaction-strengthen-self  the same, and multiplier self_norm = +1
  co (lambda)                         explicit self_norm = other_norm = lambda: consensus optimization
                                      (Mescheder, Nowozin, Geiger, NeurIPS 2017), lambda/2 grad ||xi||^2 for the
                                      joint field xi
  sga (lambda)                        explicit other_norm = lambda: symplectic gradient adjustment (Balduzzi et
                                      al., ICML 2018), which equals it for zero-sum games

Each grad_p R_p is one double backward: grad_p <u, sg(v)> with u = a gradient built with `create_graph=True` and
v a detached gradient. The *unbiased* estimator takes u and v from independent minibatches (the authors'
`unbiased_estimate_fn_lowest_variance` splits one batch in halves; here each comes from the player's sampler), so
E[grad_p <u, v>] = grad_p <E u, E v> is the term of the expected losses; the *biased* one reuses one minibatch
for both factors of a norm term, which saves a forward and backward pass but adds the minibatch covariance of
the two gradients (details: `DriftRegularizer`).

Learning rates that differ. The paper's coefficients (`convention='paper'`, the authors' `get_dd_coeffs`) give
each player's interaction term that player's OWN learning rate. Matching one round of the discrete updates to the
modified flow on a clock common to both players instead gives the OTHER player's rate (`convention='common-clock'`,
derived in `drift_coefficients`). Both agree when the players' per-round learning rates are equal; otherwise only
the common-clock flow has the O(lr^3) one-round error of a first-order modified flow (measured: `python -m
ganpatch.drift_study`, and `tests/unit/test_ganpatch_drift.py`). The presets reproduce the paper with the default.
"""

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import torch

PLAYERS = ('disc', 'gen')
TERMS = ('self_norm', 'other_norm', 'other_dot_prod')
UPDATES = ('simultaneous', 'alternating')
CONVENTIONS = ('paper', 'common-clock')
ESTIMATORS = ('unbiased', 'biased')
PRESETS = ('none', 'cancel-interaction', 'cancel-interaction-strengthen-self', 'co', 'sga')
LAMBDA_PRESETS = ('co', 'sga')           # The presets that take lambda (and need it).
DRIFT_PRESETS = ('cancel-interaction', 'cancel-interaction-strengthen-self') # Scaled by the Euler drift coefficients.
EXTRAGRADIENT_OPTIMIZERS = ('extrasgd', 'extraadam') # ganpatch.optim names whose step() needs an extrapolate().


def _other(name):
    return PLAYERS[1 - PLAYERS.index(name)]


#----------------------------------------------------------------------------
# Coefficients.

@dataclasses.dataclass(frozen=True)
class Terms:
    """One number per regularizer term of one player (a drift coefficient, a multiplier or a constant)."""
    self_norm: float = 0.0
    other_norm: float = 0.0
    other_dot_prod: float = 0.0

    def values(self):
        return tuple(getattr(self, term) for term in TERMS)

    def is_zero(self):
        return all(value == 0 for value in self.values())


def drift_coefficients(lr_disc, lr_gen, *, update='simultaneous', first='disc', disc_steps=1, gen_steps=1,
                       convention='paper'):
    """Drift coefficients {'disc': Terms, 'gen': Terms} of gradient descent with per-step learning rates
    lr_disc (alpha) and lr_gen (lambda); alternating rounds update `first` with its `*_steps` steps, then the other.

    convention='paper' (Rosca et al. 2021; the authors' `get_dd_coeffs`), F = first player, S = second:
      simultaneous:  c_p = (self_norm lr_p/2, other_norm 0, other_dot_prod lr_p/2)
      alternating:   c_F = (lr_F/(2 n_F), 0, lr_F/2),   c_S = (lr_S/(2 n_S), 0, -(lr_S/2)(2 lr_F/lr_S - 1))
    convention='common-clock': one round of updates matched to the modified flow in time t = round index, where
    player p moves at rate r_p = n_p lr_p; expanding both to second order in the rates gives
      simultaneous:  c_p = (lr_p/2, 0, lr_q/2)
      alternating:   c_F = (lr_F/2, 0, n_S lr_S/2),      c_S = (lr_S/2, 0, -n_F lr_F/2)
    (n steps of one player with step lr_p are one Euler step of size n lr_p plus n(n-1)/2 lr_p^2 f_p f_p; the
    second player sees the first player's update, whence the sign). The conventions agree when n = 1 and
    lr_disc = lr_gen. Coefficients are in gradient units: the drift adds c * grad R to the loss gradient.
    """
    check_schedule(update, first, disc_steps, gen_steps)
    _check_choice('convention', convention, CONVENTIONS)
    lrs = {'disc': _positive_number('lr_disc', lr_disc), 'gen': _positive_number('lr_gen', lr_gen)}
    steps = {'disc': disc_steps, 'gen': gen_steps}
    if update == 'simultaneous':
        if convention == 'paper':
            return {p: Terms(lrs[p] / 2, 0.0, lrs[p] / 2) for p in PLAYERS}
        return {p: Terms(lrs[p] / 2, 0.0, lrs[_other(p)] / 2) for p in PLAYERS}
    f, s = first, _other(first)
    if convention == 'paper':
        return {f: Terms(lrs[f] / (2 * steps[f]), 0.0, lrs[f] / 2),
                s: Terms(lrs[s] / (2 * steps[s]), 0.0, -lrs[s] / 2 * (2 * lrs[f] / lrs[s] - 1))}
    return {f: Terms(lrs[f] / 2, 0.0, steps[s] * lrs[s] / 2),
            s: Terms(lrs[s] / 2, 0.0, -steps[f] * lrs[f] / 2)}


def preset_terms(preset, lam=None):
    """(multiplier, explicit) of a preset, the same for both players (see the module docstring)."""
    check_preset(preset, lam)
    multiplier, explicit = Terms(), Terms()
    if preset == 'cancel-interaction':
        multiplier = Terms(other_dot_prod=-1.0)
    elif preset == 'cancel-interaction-strengthen-self':
        multiplier = Terms(self_norm=1.0, other_dot_prod=-1.0)
    elif preset == 'co':
        explicit = Terms(self_norm=lam, other_norm=lam)
    elif preset == 'sga':
        explicit = Terms(other_norm=lam)
    return multiplier, explicit


def combine(drift_coeffs, multiplier, explicit):
    """Regularizer coefficients per player: multiplier * drift + explicit, term by term (the authors'
    `get_explicit_coeffs`). `multiplier` and `explicit` are one `Terms` for both players or {player: Terms}."""
    def per_player(value):
        return value if isinstance(value, Mapping) else {p: value for p in PLAYERS}
    multiplier, explicit = per_player(multiplier), per_player(explicit)
    return {p: Terms(*(m * d + e for m, d, e in zip(multiplier[p].values(), drift_coeffs[p].values(), explicit[p].values())))
            for p in PLAYERS}


def preset_coefficients(preset, lam=None, *, lr_disc, lr_gen, update='simultaneous', first='disc', disc_steps=1,
                        gen_steps=1, convention='paper'):
    """Regularizer coefficients {'disc': Terms, 'gen': Terms} of a preset for this update schedule."""
    multiplier, explicit = preset_terms(preset, lam)
    drift_coeffs = drift_coefficients(lr_disc, lr_gen, update=update, first=first, disc_steps=disc_steps,
                                      gen_steps=gen_steps, convention=convention)
    return combine(drift_coeffs, multiplier, explicit)


#----------------------------------------------------------------------------
# Validation: every check raises ValueError with a message fit for a command line.

def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'Unknown {name} {value!r}; expected one of {", ".join(map(str, choices))}')


def _positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def check_preset(preset, lam):
    """A known preset; lambda (finite, > 0) given exactly for the presets that take it ('co', 'sga')."""
    _check_choice('drift preset', preset, PRESETS)
    if preset in LAMBDA_PRESETS:
        if lam is None:
            raise ValueError(f'The drift preset {preset!r} needs lambda (its regularization strength)')
        _positive_number(f'lambda of {preset!r}', lam)
    elif lam is not None:
        raise ValueError(f'lambda is only used by the presets {", ".join(LAMBDA_PRESETS)}; '
                         f'{preset!r} takes none, got lambda = {lam!r}')


def check_schedule(update, first, disc_steps, gen_steps):
    """A known update and first player, integer steps >= 1, and one step each for simultaneous updates."""
    _check_choice('update', update, UPDATES)
    _check_choice('first player', first, PLAYERS)
    for name, value in [('disc_steps', disc_steps), ('gen_steps', gen_steps)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    if update == 'simultaneous' and (disc_steps, gen_steps) != (1, 1):
        raise ValueError(f'Simultaneous updates take one step per player per round, got disc_steps={disc_steps}, '
                         f'gen_steps={gen_steps}; use alternating updates for more steps of one player')


def check_setup(*, preset='none', lam=None, estimator='unbiased', update='simultaneous', first='disc', disc_steps=1,
                gen_steps=1, convention='paper'):
    """Reject, before any work starts, every drift setting that cannot run as meant (Runge-Kutta updates:
    `ganpatch.runge_kutta.check_setup`)."""
    check_preset(preset, lam)
    _check_choice('estimator', estimator, ESTIMATORS)
    check_schedule(update, first, disc_steps, gen_steps)
    _check_choice('convention', convention, CONVENTIONS)


#----------------------------------------------------------------------------
# Players and regularizer gradients.

@dataclasses.dataclass
class Player:
    """One player: its parameters, its loss on a minibatch and a sampler of fresh minibatches.

    params: an nn.Module or an iterable of tensors (those with requires_grad are the player's).
    loss:   loss(batch) -> scalar tensor, this player's loss. It must stay differentiable with respect to the
            OTHER player's parameters too (no `.detach()` of G(z) in D's loss) whenever a term needs it:
            other_dot_prod of this player, and other_norm of the other player.
    sample: sample() -> a fresh, independent minibatch for `loss` (anything `loss` accepts); None for a
            deterministic loss, which is then called with None.
    """
    params: Any
    loss: Callable[[Any], torch.Tensor]
    sample: Optional[Callable[[], Any]] = None

    def __post_init__(self):
        params = self.params.parameters() if isinstance(self.params, torch.nn.Module) else self.params
        self.params = [param for param in params if param.requires_grad]
        if len(self.params) == 0:
            raise ValueError('A player needs at least one parameter with requires_grad')

    def draw(self):
        return None if self.sample is None else self.sample()


def _dot(us, vs):
    """sum_i <u_i, v_i> over tensor lists (None entries count as zero), as a 0-dim tensor or None."""
    total = None
    for u, v in zip(us, vs, strict=True):
        if u is not None and v is not None:
            term = (u * v).sum()
            total = term if total is None else total + term
    return total


def _grad(output, inputs, create_graph=False):
    return list(torch.autograd.grad(output, inputs, create_graph=create_graph, allow_unused=True))


class DriftRegularizer:
    """Each player's gradient: its loss gradient plus sum_term coefficient * grad_p R_p[term] (module docstring).

    Args:
        disc, gen: the two `Player`s.
        coefficients: {'disc': Terms, 'gen': Terms}, e.g. from `preset_coefficients`; None = no regularizer.
        estimator: 'unbiased' or 'biased' (`ESTIMATORS`). With the player's step minibatch b0 and the other
            player q, each term is grad_p <u, sg(v)> with
              self_norm       u from b0; v from a fresh draw of p (unbiased) or from b0 (biased)
              other_norm      u from a draw of q; v from another draw of q (unbiased) or the same one (biased)
              other_dot_prod  u from b0; v = grad_q L_q from a draw of q: independent of b0 in both modes
            The biased estimate of a norm term is the exact gradient of 1/2 ||grad L(b)||^2 on one minibatch b,
            which adds the minibatch covariance of the two factors to the term of the expected losses.
        all_reduce: optional callable that averages a list of gradient tensors across processes in place
            (torch.distributed, e.g. `average_across_processes`); applied to each player's total gradient, so
            every rank steps identically.

    `backward(name)` adds player `name`'s total gradient to its parameters' `.grad` (the other player's `.grad`
    is left alone, whatever the loss depends on); that player's optimizer `step()` then applies it, clipping
    included (alternating updates). `backward_simultaneous()` does both players at the current point and reuses
    each player's loss gradient as the other player's v (an independent minibatch, so the estimate stays
    unbiased), which saves a forward and backward pass per player and per step (simultaneous updates).
    """

    def __init__(self, disc, gen, coefficients=None, *, estimator='unbiased', all_reduce=None):
        _check_choice('estimator', estimator, ESTIMATORS)
        self.players = {'disc': disc, 'gen': gen}
        coefficients = coefficients if coefficients is not None else {p: Terms() for p in PLAYERS}
        if set(coefficients) != set(PLAYERS):
            raise ValueError(f'coefficients must have exactly the players {PLAYERS}, got {tuple(coefficients)}')
        self.coefficients = dict(coefficients)
        self.estimator = estimator
        self.all_reduce = all_reduce

    def gradients(self, name, batch=None):
        """(loss at the step minibatch, detached; [total gradient per parameter of player `name`]).
        `batch` is the step minibatch b0 (None: drawn from the player's sampler)."""
        _check_choice('player', name, PLAYERS)
        return self._total(name, *self._loss_gradients(name, batch))

    def simultaneous_gradients(self, batches=None):
        """{player: (loss, total gradient)}, both at the current parameters; `batches` = {player: b0} or None."""
        batches = batches or {}
        first = {name: self._loss_gradients(name, batches.get(name)) for name in PLAYERS}
        fixed = {name: _detached(own, self.players[name].params) for name, (_, own, _) in first.items()}
        return {name: self._total(name, *first[name], other_fixed=fixed[_other(name)]) for name in PLAYERS}

    def backward(self, name, batch=None):
        """Add player `name`'s total gradient to its parameters' `.grad`; return its loss (detached)."""
        loss, total = self.gradients(name, batch)
        accumulate_grad_(self.players[name].params, total)
        return loss

    def backward_simultaneous(self, batches=None):
        """Both players' total gradients at the current point into their `.grad`; return {player: loss}."""
        losses = {}
        for name, (loss, total) in self.simultaneous_gradients(batches).items():
            accumulate_grad_(self.players[name].params, total)
            losses[name] = loss
        return losses

    def _loss_gradients(self, name, batch):
        """(loss, grad_p L_p, grad_q L_p) at b0; with a graph where a term differentiates them again."""
        player, other = self.players[name], self.players[_other(name)]
        coeffs = self.coefficients[name]
        loss = player.loss(player.draw() if batch is None else batch)
        inputs = player.params + (other.params if coeffs.other_dot_prod != 0 else [])
        grads = _grad(loss, inputs, create_graph=coeffs.self_norm != 0 or coeffs.other_dot_prod != 0)
        return loss, grads[:len(player.params)], grads[len(player.params):]

    def _total(self, name, loss, own, mixed, other_fixed=None):
        """The loss gradient plus the regularizer gradients; `other_fixed` is a detached grad_q L_q from a
        minibatch independent of b0 (None: drawn here when a term needs one)."""
        player, other = self.players[name], self.players[_other(name)]
        coeffs, biased = self.coefficients[name], self.estimator == 'biased'
        other_gradient = lambda: other_fixed if other_fixed is not None else _grad(other.loss(other.draw()), other.params)
        terms = []
        if coeffs.self_norm != 0:
            fixed = _detached(own, player.params) if biased else _grad(player.loss(player.draw()), player.params)
            terms.append((coeffs.self_norm, _dot(own, fixed)))
        if coeffs.other_norm != 0:
            other_grads = _grad(other.loss(other.draw()), other.params, create_graph=True)
            fixed = _detached(other_grads, other.params) if biased else other_gradient()
            terms.append((coeffs.other_norm, _dot(other_grads, fixed)))
            if other_fixed is None:
                other_fixed = fixed # Independent of b0 in both modes: v of other_dot_prod too.
        if coeffs.other_dot_prod != 0:
            if all(g is None for g in mixed):
                raise ValueError(f"{name}'s loss does not depend on the {_other(name)} parameters (detached?); "
                                 f'other_dot_prod needs its gradient with respect to them')
            terms.append((coeffs.other_dot_prod, _dot(mixed, other_gradient())))
        total = _detached(own, player.params)
        regularizer = sum(coeff * value for coeff, value in terms if value is not None and value.requires_grad)
        if torch.is_tensor(regularizer):
            for accumulated, extra in zip(total, _grad(regularizer, player.params)):
                if extra is not None:
                    accumulated.add_(extra)
        if self.all_reduce is not None:
            self.all_reduce(total)
        return loss.detach(), total


def _detached(grads, params):
    """Detached copies of `grads`, zeros where a parameter got no gradient."""
    return [torch.zeros_like(p) if g is None else g.detach().clone() for p, g in zip(params, grads, strict=True)]


def accumulate_grad_(params, grads):
    """param.grad += grad (param.grad = grad where it is None), as `Tensor.backward` accumulates."""
    with torch.no_grad():
        for param, grad in zip(params, grads, strict=True):
            if param.grad is None:
                param.grad = grad.detach().clone()
            else:
                param.grad.add_(grad)


def average_across_processes(tensors):
    """`all_reduce` for torch.distributed: each tensor becomes its mean over the processes, in place."""
    world = torch.distributed.get_world_size()
    for tensor in tensors:
        torch.distributed.all_reduce(tensor)
        tensor.div_(world)
