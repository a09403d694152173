"""Explicit Runge-Kutta updates of a two-player game (orders 1, 2, 4), as a source of gradients for the optimizers.

The comparison of Rosca, Wu, Dherin, Barrett, "Discretization Drift in Two-Player Games", ICML 2021 (arXiv
2105.13922) with ODE-GAN (Qin, Wu, Springenberg, Brock, Donahue, Lillicrap, Kohli, "Training Generative Adversarial
Networks by Solving Ordinary Differential Equations", NeurIPS 2020): integrate the game's flow
x' = -(grad_phi L1, grad_theta L2) with a higher-order method, whose drift is O(h^order) instead of Euler's O(h).

One step of size h_p per player p (its learning rate), both players together (the authors' `optim.RungeKutta`):
  k_1 = g(x),   k_i = g(x - a_i h k_{i-1})  (i = 2..s, each a fresh minibatch),   x <- x - h sum_i b_i k_i
where g stacks each player's stage gradient (loss gradient plus any regularizer of the `DriftRegularizer`) and
h k means h_p k_p per player. Tableaux (a_2..a_s; b_1..b_s):
  order 1  Euler:         (); (1)
  order 2  Heun:          (1); (1/2, 1/2)
  order 4  classic RK4:   (1/2, 1/2, 1); (1/6, 1/3, 1/3, 1/6)
`backward(...)` evaluates the stages, puts the parameters back to x and leaves sum_i b_i k_i in `.grad`; each
player's optimizer `step()` with lr = h_p then completes the update (clipping, if any, clips the combined
direction). With plain SGD that is exactly the scheme above. The authors ran every stage with the
discriminator's learning rate; here each player uses its own, which is the same in their config (both 1e-2).
"""

import torch

from ganpatch.drift import DRIFT_PRESETS, EXTRAGRADIENT_OPTIMIZERS, accumulate_grad_

TABLEAUX = {
    1: ((), (1.0,)),
    2: ((1.0,), (0.5, 0.5)),
    4: ((0.5, 0.5, 1.0), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}
ORDERS = tuple(TABLEAUX)


def check_setup(order, *, update='simultaneous', preset='none', optimizers=()):
    """Reject a Runge-Kutta setting that cannot run as meant (ValueError, before any work starts).

    `optimizers` are the players' optimizer names (`ganpatch.optim.OPTIMIZERS`), `preset` the drift preset
    (`ganpatch.drift.PRESETS`, checked there). Runge-Kutta updates move both players at once from common stage
    points (update='simultaneous'); they cannot drive an extragradient optimizer, whose step() needs its own
    extrapolation; and above order 1 there is no first-order drift for the drift-scaled presets to act on (the
    explicit co/sga terms are fine).
    """
    if order not in TABLEAUX:
        raise ValueError(f'Unknown Runge-Kutta order {order!r}; expected one of {", ".join(map(str, ORDERS))}')
    if update != 'simultaneous':
        raise ValueError(f'Runge-Kutta updates move both players together from the same stage points; they need '
                         f'simultaneous updates, got {update!r}')
    extragradient = [name for name in optimizers if name in EXTRAGRADIENT_OPTIMIZERS]
    if extragradient:
        raise ValueError(f'Runge-Kutta updates cannot drive the extragradient optimizer {extragradient[0]!r}: it takes '
                         'its own extrapolation step; use sgd (or adam)')
    if order > 1 and preset in DRIFT_PRESETS:
        raise ValueError(f'The drift preset {preset!r} scales the drift of gradient descent (Euler); Runge-Kutta of '
                         f'order {order} has no first-order drift to cancel. Use it without Runge-Kutta, or co/sga')


class RungeKutta:
    """Runge-Kutta stage gradients for the two players of a `ganpatch.drift.DriftRegularizer`.

    Args:
        regularizer: a `DriftRegularizer` (its players, coefficients and estimator give each stage gradient).
        order: 1, 2 or 4.
    """

    def __init__(self, regularizer, order=4):
        check_setup(order)
        self.regularizer = regularizer
        self.order = order
        self.stage_scales, self.weights = TABLEAUX[order]

    def backward(self, step_sizes):
        """Add sum_i b_i k_i to every parameter's `.grad`; the parameters end where they started.

        step_sizes: {'disc': h_disc, 'gen': h_gen}, the learning rates the optimizers will step with.
        Returns {player: loss at the first stage} (detached).
        """
        players = self.regularizer.players
        if set(step_sizes) != set(players):
            raise ValueError(f'step_sizes must have exactly the players {tuple(players)}, got {tuple(step_sizes)}')
        start = {name: [param.detach().clone() for param in player.params] for name, player in players.items()}
        combined, losses, stage = {}, {}, None
        try:
            for i, weight in enumerate(self.weights):
                if i > 0:
                    self._move(players, start, stage, step_sizes, self.stage_scales[i - 1])
                stage = {}
                for name, (loss, grads) in self.regularizer.simultaneous_gradients().items(): # At the same point.
                    stage[name] = grads
                    losses.setdefault(name, loss)
                for name, grads in stage.items():
                    if name not in combined:
                        combined[name] = [weight * grad for grad in grads]
                    else:
                        torch._foreach_add_(combined[name], grads, alpha=weight)
        finally:
            with torch.no_grad():
                for name, player in players.items():
                    torch._foreach_copy_(player.params, start[name])
        for name, player in players.items():
            accumulate_grad_(player.params, combined[name])
        return losses

    @staticmethod
    @torch.no_grad()
    def _move(players, start, stage, step_sizes, scale):
        """Parameters <- x - scale * h_p * k_prev, per player."""
        for name, player in players.items():
            torch._foreach_copy_(player.params, start[name])
            torch._foreach_add_(player.params, stage[name], alpha=-scale * step_sizes[name])

