"""conv2d_gradfix on torch >= 1.11: the native path already skips the weight gradients of R1 and
path length (the reason patch 'conv2d_gradfix: say why torch >= 1.11 needs no custom op' leaves
the custom op disabled)."""

import pytest

from stylegan_support import check_regularizer_passes_compute_no_conv_weight_gradients

pytestmark = pytest.mark.integration

NETWORKS = """
from training.networks_stylegan2 import Generator, Discriminator
G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, channel_base=256, channel_max=32,
              mapping_kwargs=dict(num_layers=2), fused_modconv_default='inference_only').train()
D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=32).train()
"""


def test_first_order_regularizer_passes_compute_no_conv_weight_gradients(patched_tree):
    check_regularizer_passes_compute_no_conv_weight_gradients(patched_tree('stylegan3'), NETWORKS)
