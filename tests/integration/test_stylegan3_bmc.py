"""BMC on D in the patched StyleGAN2Loss: the Dmain gradient is the exact gradient of paper eq. 18's
objective, cross term included, although upstream splits Dmain into two backward passes."""

import pytest

from stylegan_support import run

pytestmark = pytest.mark.integration

COMPARE_GRADIENTS = r'''
import torch
import ganpatch.bmc
from training.loss import StyleGAN2Loss
from training.networks_stylegan2 import Generator, Discriminator

bmc = dict(rho1=0.5, rho2=0.3, b1_mean=0.2, b1_std=0.5, b2_mean=1.0, b2_std=0.5, seed=3) # Large, to make the term matter.
torch.manual_seed(0)
G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=128, channel_max=16, mapping_kwargs=dict(num_layers=1)).train().requires_grad_(False)
D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2)).train()
real, z, c = torch.randn([4, 3, 16, 16]), torch.randn([4, 16]), torch.zeros([4, 0])

# Patched loss: Dmain with --bmc=D.
loss = StyleGAN2Loss(device=torch.device('cpu'), G=G, D=D, r1_gamma=0, bmc_target='D', bmc_kwargs=bmc)
torch.manual_seed(1)
loss.accumulate_gradients(phase='Dmain', real_img=real, real_c=c, gen_z=z, gen_c=c, gain=1, cur_nimg=0)
patched = [p.grad.clone() for p in D.parameters()]
D.zero_grad(set_to_none=True)

# Reference: the whole objective in one expression, same noise and same (b1, b2) draw.
torch.manual_seed(1)
fake_logits = D(G(z, c), c)
real_logits = D(real, c)
b1, b2 = ganpatch.bmc.BrownianSampler(**bmc).sample(4, torch.device('cpu'))
term = ganpatch.bmc.discriminator_bmc_term(real_logits, fake_logits, b1, b2, bmc['rho1'], bmc['rho2']).reshape(real_logits.shape)
(torch.nn.functional.softplus(fake_logits) + torch.nn.functional.softplus(-real_logits) + term).mean().backward()
reference = [p.grad.clone() for p in D.parameters()]

# Without the cross term's gradient through D(G(z)) the result would differ:
D.zero_grad(set_to_none=True)
torch.manual_seed(1)
fake_logits = D(G(z, c), c)
real_logits = D(real, c)
term = ganpatch.bmc.discriminator_bmc_term(real_logits, fake_logits.detach(), b1, b2, bmc['rho1'], bmc['rho2']).reshape(real_logits.shape)
(torch.nn.functional.softplus(fake_logits) + torch.nn.functional.softplus(-real_logits) + term).mean().backward()
half = [p.grad.clone() for p in D.parameters()]

close = all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(patched, reference))
differs = max(float((a - b).abs().max()) for a, b in zip(reference, half))
print('MATCH', close, 'CROSS_TERM_MATTERS', differs > 1e-6)
'''


def test_bmc_on_D_gives_the_exact_eq18_gradient(patched_tree):
    output = run(patched_tree('stylegan3'), ['-c', COMPARE_GRADIENTS])
    assert 'MATCH True CROSS_TERM_MATTERS True' in output, output
