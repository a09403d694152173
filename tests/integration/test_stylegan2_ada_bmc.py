"""BMC in the patched stylegan2-ada StyleGAN2Loss.

--bmc=G must be the GAN-BMC authors' term (their commit 7d9eae2, training/loss.py), whose gradient with
respect to the fake logits s is  d/ds [softplus(-s) - 1/2 rho1 |s^2 b1| - 1/4 rho2 |s^2 b2|]
= -sigmoid(-s) - rho1 |b1| s - 1/2 rho2 |b2| s;  --bmc=D must give the exact gradient of paper eq. 18.
"""

import pytest

from stylegan_support import run

pytestmark = pytest.mark.integration

NETWORKS = r'''
import torch
import ganpatch.bmc
from training.loss import StyleGAN2Loss
from training.networks import Generator, Discriminator
torch.manual_seed(0)
G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=1),
              synthesis_kwargs=dict(channel_base=128, channel_max=16)).train().requires_grad_(False)
D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2)).train()
real, z, c = torch.randn([4, 3, 16, 16]), torch.randn([4, 16]), torch.zeros([4, 0])
def loss_for(**bmc):
    return StyleGAN2Loss(device=torch.device('cpu'), G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, r1_gamma=0, pl_weight=0, **bmc)
'''

G_TERM = NETWORKS + r'''
from torch_utils import training_stats
bmc = dict(rho1=0.1, rho2=0.01, b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, seed=5) # The authors' values.
G.requires_grad_(True); D.requires_grad_(False)
collector = training_stats.Collector(regex='Loss/G/.*')

# Patched loss: Gmain with --bmc=G, gain 3.
torch.manual_seed(1)
loss_for(bmc_target='G', bmc_kwargs=bmc).accumulate_gradients(phase='Gmain', real_img=real, real_c=c, gen_z=z, gen_c=c, sync=True, gain=3)
patched = [p.grad.clone() for p in G.parameters()]
collector.update()
G.zero_grad(set_to_none=True)

# The same draw of (b1, b2), then the authors' 7d9eae2 expression and the hand-derived gradient.
b1, b2 = (float(b) for b in ganpatch.bmc.BrownianSampler(**bmc).sample(4, torch.device('cpu')))
torch.manual_seed(1)
loss = loss_for()
gen_img, _ws = loss.run_G(z, c, sync=True)
s = loss.run_D(gen_img, c, sync=False)
rou1, rou2 = 0.1, 0.01
br_weight = 1/2 * rou1* torch.abs(s *s* b1) + 1/4 * torch.abs(s * s * b2) * rou2
authors_loss = (torch.nn.functional.softplus(-s) - br_weight).mean()
ds = (-torch.sigmoid(-s) - rou1 * abs(b1) * s - 0.5 * rou2 * abs(b2) * s) / s.numel() * 3
s.backward(ds.detach())
formula = [p.grad.clone() for p in G.parameters()]
scale = max(float(g.abs().max()) for g in formula)
close = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6 * scale) for a, b in zip(patched, formula))
nonzero = scale > 0
print('GRADIENT_MATCHES_FORMULA', close and nonzero)
print('LOSS_MATCHES_AUTHORS', abs(collector.mean('Loss/G/loss') - float(authors_loss.detach())) < 1e-6)
print('TERM_LOGGED', abs(collector.mean('Loss/G/bmc') - float(br_weight.mean())) < 1e-7)
'''

D_TERM = NETWORKS + r'''
bmc = dict(rho1=0.5, rho2=0.3, b1_mean=0.2, b1_std=0.5, b2_mean=1.0, b2_std=0.5, seed=3) # Large, to make the term matter.
torch.manual_seed(1)
loss_for(bmc_target='D', bmc_kwargs=bmc).accumulate_gradients(phase='Dmain', real_img=real, real_c=c, gen_z=z, gen_c=c, sync=True, gain=1)
patched = [p.grad.clone() for p in D.parameters()]
D.zero_grad(set_to_none=True)

def reference(detach_fake):
    torch.manual_seed(1)
    loss = loss_for()
    fake_logits = D(loss.run_G(z, c, sync=False)[0], c)
    real_logits = D(real, c)
    b1, b2 = ganpatch.bmc.BrownianSampler(**bmc).sample(4, torch.device('cpu'))
    fake = fake_logits.detach() if detach_fake else fake_logits
    term = ganpatch.bmc.discriminator_bmc_term(real_logits, fake, b1, b2, bmc['rho1'], bmc['rho2']).reshape(real_logits.shape)
    (torch.nn.functional.softplus(fake_logits) + torch.nn.functional.softplus(-real_logits) + term).mean().backward()
    grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad(set_to_none=True)
    return grads

exact, half = reference(False), reference(True)
close = all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(patched, exact))
differs = max(float((a - b).abs().max()) for a, b in zip(exact, half))
print('MATCH', close, 'CROSS_TERM_MATTERS', differs > 1e-6)
'''


def test_bmc_on_G_is_the_authors_term_and_its_gradient_the_formula(patched_tree):
    output = run(patched_tree('stylegan2-ada'), ['-c', G_TERM])
    assert 'GRADIENT_MATCHES_FORMULA True' in output, output
    assert 'LOSS_MATCHES_AUTHORS True' in output, output
    assert 'TERM_LOGGED True' in output, output


def test_bmc_on_D_gives_the_exact_eq18_gradient(patched_tree):
    output = run(patched_tree('stylegan2-ada'), ['-c', D_TERM])
    assert 'MATCH True CROSS_TERM_MATTERS True' in output, output
