"""Gradient noise of a GAN's networks at a checkpoint, with nothing updated: parameters or buffers.

Runs both passes of `ganpatch.gradnoise` (the measurement of Gorbunov et al., NeurIPS 2022, arXiv 2206.01095:
pass 1 averages each network's minibatch gradients into g_bar, pass 2 records ||g_b - g_bar||_2 on fresh
minibatches) with one phase per network, as a training step of that network would compute its gradient:

- only the measured network's parameters require grad, as when a GAN step freezes the opponent;
- forwards run in the networks' current mode (train mode for a training-like gradient: BatchNorm normalizes
  with batch statistics, spectral norm runs its power iteration), but every buffer of every network is put
  back after each minibatch (`ganpatch.buffers.preserved_buffers`), so each gradient is taken at exactly
  the checkpoint's state and the networks end as loaded.
No optimizer is involved; nothing steps.

A train-mode forward of a spectral-norm layer refines u before it normalizes, so when a minibatch forwards
a network several times (D on real images, then on fakes), each forward normalizes with another u. To take
every forward with the checkpoint's u and v, run the measurement inside
`ganpatch.buffers.held_power_iteration(network)` (torch.nn.utils.spectral_norm layers).
"""

from ganpatch.buffers import preserved_buffers
from ganpatch.gradnoise import GradientNoiseMeter, measure_gradient_noise


def measure_networks(networks, compute_gradient, num_batches, log=print, all_reduce=None):
    """Both passes for each network of `networks` ({phase name: nn.Module}); returns the GradientNoiseMeter.

    `compute_gradient(name)` draws fresh minibatches and back-propagates the loss that network `name` trains
    on into `.grad` (accumulating over sub-batches is fine). `num_batches`: minibatches per pass, an int for
    every network or {name: int} (e.g. one per D step and one per G step of a training run). `all_reduce`:
    see `GradientNoiseMeter`. Save the results with `meter.save(run_dir)`.
    """
    params = {name: list(network.parameters()) for name, network in networks.items()}
    meter = GradientNoiseMeter(params, all_reduce)
    all_params = list({id(p): p for phase_params in params.values() for p in phase_params}.values())
    requires_grad = [p.requires_grad for p in all_params]

    def measured_gradient(phase):
        measured = {id(p) for p in params[phase]}
        for p, flag in zip(all_params, requires_grad):
            p.requires_grad_(flag and id(p) in measured)
        try:
            with preserved_buffers(*networks.values()):
                compute_gradient(phase)
        finally:
            for p, flag in zip(all_params, requires_grad):
                p.requires_grad_(flag)

    measure_gradient_noise(meter, measured_gradient, num_batches, mode='both', log=log)
    return meter
