"""Module buffers kept as they are across forward passes that should leave no trace.

Training-mode forward passes update buffers as a side effect: BatchNorm's running mean, variance and
batch counter, a spectral-norm layer's power-iteration vector u (and, in BigGAN, its logged sigma).
`preserved_buffers` lets such passes run exactly as in training (batch statistics, one power iteration
inside the forward) and then puts every buffer back, e.g. around a gradient evaluated at an extrapolated
point (`ganpatch.seg`) or a measurement at a checkpoint (`ganpatch.gradnoise_networks`).
"""

import contextlib

import torch


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
