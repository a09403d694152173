"""One optimizer step of one GAN player on fresh minibatches: a plain step, or a complete clipped-SEG step.

Clipped SEG (Gorbunov, Danilova, Dobre, Dvurechensky, Gasnikov, Gidel, "Clipped Stochastic Methods for
Variational Inequalities with Heavy-Tailed Noise", NeurIPS 2022, arXiv 2206.01095, clipped-SEG) evaluates
two gradients on two independent minibatches xi1, xi2:

    x~ = x - lr * clip(g(x; xi1))            extrapolation pass, at the real iterate x
    x  <- x - lr * clip(g(x~; xi2))           update pass, at the extrapolated point x~, applied from x

`optimizer_step` runs both passes and returns only when the player is back at a real iterate, so the
caller (the other player's step, an EMA update, a checkpoint, a sample sheet, a metric) never sees x~.
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
      zero_grad, compute_gradient() at x~, step(). The buffers of `modules` (pass the player's network)
      are restored after the pass at x~ (`ganpatch.buffers.preserved_buffers`): that forward normalizes
      with batch statistics and runs its power iterations as any training forward, but BatchNorm running
      statistics and spectral-norm vectors only keep what forwards at real iterates put there, so the
      buffers that checkpoints, EMA copies and eval-mode samples use never come from x~. The
      extrapolation pass at x is an ordinary training forward and updates them.
    """
    if is_extragradient(optimizer):
        optimizer.zero_grad()
        compute_gradient()
        optimizer.extrapolate()
        optimizer.zero_grad()
        with preserved_buffers(*modules):
            result = compute_gradient()
        optimizer.step()
        return result
    optimizer.zero_grad()
    result = compute_gradient()
    optimizer.step()
    return result
