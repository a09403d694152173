"""Module buffers kept as they are across forward passes that should leave no trace.

Training-mode forward passes update buffers as a side effect: BatchNorm's running mean, variance and
batch counter, a spectral-norm layer's power-iteration vector u (and, in BigGAN, its logged sigma).
Two ways to keep them:

- `preserved_buffers` lets such passes run exactly as in training (batch statistics, one power iteration
  inside the forward) and then puts every buffer back, e.g. around a gradient evaluated at an extrapolated
  point (`ganpatch.seg`) or a measurement at a checkpoint (`ganpatch.gradnoise_networks`);
- `held_power_iteration` stops the power iteration of `torch.nn.utils.spectral_norm` layers altogether, so
  that several forwards normalize with the same stored vectors; `advance_power_iteration` then runs it
  where the caller wants it, e.g. once per update (Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization
  for Generative Adversarial Networks", ICLR 2018, Algorithm 1: one power iteration per update).
"""

import contextlib

import torch
from torch.nn.utils.spectral_norm import SpectralNorm


@contextlib.contextmanager
def preserved_buffers(*modules):
    """Restore every buffer of `modules` on exit (also on an exception) to its value at entry.

    Buffers are restored in place (`copy_`), so references held elsewhere, e.g. by a state_dict an EMA
    helper keeps, stay valid; a buffer that a forward replaced by a new tensor is found by name and
    overwritten too. Parameters are not touched. Costs one copy of the buffers each way.
    """
    saved = [(module, name, buffer.detach().clone()) for module in modules for name, buffer in module.named_buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, value in saved:
                module.get_buffer(name).copy_(value)


def spectral_norm_layers(module):
    """(layer, hook) for every layer of `module` that torch.nn.utils.spectral_norm normalizes."""
    return [(layer, hook) for layer in module.modules() for hook in layer._forward_pre_hooks.values()
            if isinstance(hook, SpectralNorm)]


@contextlib.contextmanager
def held_power_iteration(module):
    """Inside the block, forwards of `module` do not advance spectral norm's power iteration: the weights are
    normalized with the stored u and v (buffers weight_u, weight_v), which stay as they are.

    torch.nn.utils.spectral_norm iterates in train mode only, so the normalized layers (convolutions and linear
    layers, for which the mode changes nothing else) are put in eval mode; the rest of the module keeps its mode
    (BatchNorm still normalizes with batch statistics), and every layer gets its mode back on exit.
    """
    layers = [layer for layer, _ in spectral_norm_layers(module)]
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.training = False
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.training = mode


@torch.no_grad()
def advance_power_iteration(module):
    """One step of spectral norm's power iteration (n_power_iterations of them) in every normalized layer of
    `module`, in place: what a train-mode forward does before normalizing the weight."""
    for layer, hook in spectral_norm_layers(module):
        hook.compute_weight(layer, do_power_iteration=True)
