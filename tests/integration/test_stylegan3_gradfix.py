"""conv2d_gradfix on torch >= 1.11: the native path already skips the weight gradients of R1 and
path length (the reason patch 'conv2d_gradfix: say why torch >= 1.11 needs no custom op' leaves
the custom op disabled)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

LOG_CONVOLUTION_BACKWARD = r'''
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch_utils.ops import conv2d_gradfix
from training.networks_stylegan2 import Generator, Discriminator

class OutputMasks(TorchDispatchMode):
    """Records the output_mask (input, weight, bias) of every aten.convolution_backward call."""
    def __init__(self):
        super().__init__()
        self.masks = set()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.add(tuple(args[-1]))
        return func(*args, **(kwargs or {}))

torch.manual_seed(0)
conv2d_gradfix.enabled = True # As the training loop sets it.
G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, channel_base=256, channel_max=32,
              mapping_kwargs=dict(num_layers=2), fused_modconv_default='inference_only').train()
D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=32).train()

# Path length (loss.py Gpl), first-order pass.
ws = G.mapping(torch.randn([2, 32]), None)
img = G.synthesis(ws)
with OutputMasks() as pl, conv2d_gradfix.no_weight_gradients():
    pl_grads = torch.autograd.grad([(img * torch.randn_like(img)).sum()], [ws], create_graph=True)[0]
# R1 (loss.py Dr1), first-order pass.
real = torch.randn([4, 3, 32, 32], requires_grad=True)
with OutputMasks() as r1, conv2d_gradfix.no_weight_gradients():
    r1_grads = torch.autograd.grad([D(real, None).sum()], [real], create_graph=True)[0]
# Their double backward reaches the conv weights through the native convolution_backward.
with OutputMasks() as second:
    (pl_grads.square().sum() + r1_grads.square().sum()).backward()
print('PL', sorted(pl.masks))
print('R1', sorted(r1.masks))
print('SECOND_WEIGHT', any(mask[1] for mask in second.masks))
conv_weight_grads = [p.grad is not None for name, p in D.named_parameters() if name.endswith('conv0.weight')]
print('D_WEIGHT_GRAD', len(conv_weight_grads) > 0 and all(conv_weight_grads))
'''


def test_first_order_regularizer_passes_compute_no_conv_weight_gradients(patched_tree):
    tree = patched_tree('stylegan3')
    proc = subprocess.run([sys.executable, '-c', LOG_CONVOLUTION_BACKWARD], cwd=tree, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'PL [(True, False, False)]' in proc.stdout
    assert 'R1 [(True, False, False)]' in proc.stdout
    assert 'SECOND_WEIGHT True' in proc.stdout
    assert 'D_WEIGHT_GRAD True' in proc.stdout
