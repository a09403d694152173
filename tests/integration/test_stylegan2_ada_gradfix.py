"""The gradfix ops of the patched stylegan2-ada tree on torch 2.x (patch 'gradfix ops: the torch >= 1.11
code paths of NVlabs/stylegan3'): no fallback warnings, grid_sample_gradfix's custom op runs the R1 double
backward through the augmentation pipe and agrees with the native op, and conv2d_gradfix's native path
computes no conv weight gradients in the first-order R1 / path-length passes; and upfirdn2d._init remembers a
failed build."""

import pytest

from stylegan_support import check_regularizer_passes_compute_no_conv_weight_gradients, run

pytestmark = pytest.mark.integration

GRID_SAMPLE = r'''
import warnings
import torch
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training.augment import AugmentPipe
from training.networks import Discriminator

warnings.simplefilter('error') # Upstream warned on every call on torch >= 1.10.
calls = []
apply = grid_sample_gradfix._GridSample2dForward.apply
grid_sample_gradfix._GridSample2dForward.apply = lambda *args: calls.append(1) or apply(*args)
D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=32, epilogue_kwargs=dict(mbstd_group_size=2)).train()
pipe = AugmentPipe(scale=1, rotate=1, aniso=1, xfrac=1).train()
pipe.p.fill_(1.0)
real = torch.randn([4, 3, 32, 32])

def r1_gradients(enabled):
    grid_sample_gradfix.enabled = conv2d_gradfix.enabled = enabled
    torch.manual_seed(0)
    img = real.detach().requires_grad_(True)
    logits = D(pipe(img), None)
    with conv2d_gradfix.no_weight_gradients():
        r1 = torch.autograd.grad([logits.sum()], [img], create_graph=True)[0]
    D.zero_grad(set_to_none=True)
    r1.square().sum().backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in D.parameters()]

custom = r1_gradients(True)
native = r1_gradients(False)
scale = max(float(g.abs().max()) for g in native)
print('CUSTOM_OP_CALLS', len(calls) > 0)
print('AGREE', all(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale) for a, b in zip(custom, native)))
'''

NETWORKS = """
from training.networks import Generator, Discriminator
G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
              synthesis_kwargs=dict(channel_base=256, channel_max=32)).train()
D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=32).train()
"""


def test_grid_sample_custom_op_runs_r1_through_the_augment_pipe_without_warnings(patched_tree):
    output = run(patched_tree('stylegan2-ada'), ['-c', GRID_SAMPLE])
    assert 'CUSTOM_OP_CALLS True' in output and 'AGREE True' in output, output


def test_first_order_regularizer_passes_compute_no_conv_weight_gradients(patched_tree):
    check_regularizer_passes_compute_no_conv_weight_gradients(patched_tree('stylegan2-ada'), NETWORKS)


FAILED_BUILD = r'''
import warnings
from torch_utils import custom_ops
from torch_utils.ops import upfirdn2d
attempts = []
def failing_build(*args, **kwargs):
    attempts.append(1)
    raise RuntimeError('no CUDA compiler')
custom_ops.get_plugin = failing_build
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    results = [upfirdn2d._init() for _ in range(3)]
print('ATTEMPTS', len(attempts), 'RESULTS', results, 'WARNINGS', sum('Failed to build CUDA kernels' in str(w.message) for w in caught))
'''


def test_upfirdn2d_remembers_a_failed_build(patched_tree):
    """Upstream retried the build (and warned) on every call; now the first failure decides, as in bias_act."""
    output = run(patched_tree('stylegan2-ada'), ['-c', FAILED_BUILD])
    assert 'ATTEMPTS 1 RESULTS [False, False, False] WARNINGS 1' in output, output
