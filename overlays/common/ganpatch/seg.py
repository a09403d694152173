"""One optimizer step of GAN players on fresh minibatches: a plain step, or a complete clipped-SEG step.

Clipped SEG (Gorbunov, Danilova, Dobre, Dvurechensky, Gasnikov, Gidel, "Clipped Stochastic Methods for
Variational Inequalities with Heavy-Tailed Noise", NeurIPS 2022, arXiv 2206.01095, clipped-SEG) evaluates
two gradients on two independent minibatches xi1, xi2:

    x~ = x - lr * clip(g(x; xi1))            extrapolation pass, at the real iterate x
    x  <- x - lr * clip(g(x~; xi2))           update pass, at the extrapolated point x~, applied from x

`optimizer_step` (one player) and `joint_step` (several players from gradients at one point, e.g. simultaneous
updates) run both passes and return only when every player is back at a real iterate, so the caller (the other
player's step, an EMA update, a checkpoint, a sample sheet, a metric) never sees x~.
"""

from ganpatch.buffers import preserved_buffers
from ganpatch.optim import is_extragradient


def optimizer_step(optimizer, compute_gradient, modules=()):
    """One update of the parameters `optimizer` trains; returns what the last `compute_gradient()` returned.

    `compute_gradient()` draws FRESH minibatches on every call, back-propagates the player's whole loss into
    `.grad` (every accumulation round, every regularizer that belongs to the gradient) and may return
    anything, e.g. losses to log. Clipping happens inside the optimizers' step()/extrapolate()
    (`ganpatch.optim`), i.e. on that whole gradient.

    - Optimizer without extrapolation (torch's, or ganpatch's ClippedSGD/ClippedAdam): zero_grad,
      compute_gradient(), step() -- exactly the usual three lines.
    - Extragradient optimizer (ExtraSGD, ExtraAdam): zero_grad, compute_gradient() at x, extrapolate();
      zero_grad, compute_gradient() at x~, step().

    `modules`: the networks whose buffers the pass at x~ must not change (pass the player's network), see
    `joint_step`. The default, none, lets that pass update buffers like any training forward.
    """
    return joint_step([optimizer], compute_gradient, modules)


def joint_step(optimizers, compute_gradient, modules=()):
    """One update of the parameters all `optimizers` train, every gradient taken at the same point; returns what
    the last `compute_gradient()` returned (which back-propagates every player's gradient, see `optimizer_step`).

    Extragradient optimizers (all or none of them) take one complete clipped-SEG step together: every player
    extrapolates from the same x, then every player updates from its gradient at the same x~. Others take one
    step each on one call of `compute_gradient()`.

    Buffers: the extrapolation pass at x is an ordinary training forward and updates them. The buffers of
    `modules` are restored after the pass at x~ (`ganpatch.buffers.preserved_buffers`): that forward
    normalizes with batch statistics and runs its power iterations as any training forward, but BatchNorm
    running statistics and spectral-norm vectors then only keep what forwards at real iterates put there, so
    the buffers that checkpoints, EMA copies and eval-mode samples use never come from x~. With `modules`
    empty (the default) the pass at x~ keeps its buffer updates too.
    """
    extragradient = {is_extragradient(optimizer) for optimizer in optimizers}
    if extragradient == {True, False}:
        raise ValueError('joint_step needs all optimizers extragradient, or none')
    if extragradient == {True}:
        _zero_grad(optimizers)
        compute_gradient()
        for optimizer in optimizers:
            optimizer.extrapolate()
        _zero_grad(optimizers)
        with preserved_buffers(*modules):
            result = compute_gradient()
    else:
        _zero_grad(optimizers)
        result = compute_gradient()
    for optimizer in optimizers:
        optimizer.step()
    return result


def _zero_grad(optimizers):
    for optimizer in optimizers:
        optimizer.zero_grad()
