"""ganpatch.bmc: the loss terms against their formulas (values and gradcheck) and the sampler's reproducibility."""

import pytest
import torch

from ganpatch.bmc import BMC_TARGETS, BrownianMotionController, BrownianSampler, discriminator_bmc_term, generator_bmc_term


def test_targets():
    assert BMC_TARGETS == ('none', 'G', 'D')


def test_generator_term_hand_values():
    s = torch.tensor([2.0, -1.0, 0.0])
    b1, b2 = torch.tensor(-0.5), torch.tensor(2.0)
    # 1/2 rho1 |s^2 b1| + 1/4 rho2 |s^2 b2| with rho1 = 0.1, rho2 = 0.01: s = 2 -> 0.05 * 2 + 0.0025 * 8.
    expected = torch.tensor([0.05 * 4 * 0.5 + 0.0025 * 4 * 2, 0.05 * 0.5 + 0.0025 * 2, 0.0])
    torch.testing.assert_close(generator_bmc_term(s, b1, b2, 0.1, 0.01), expected)


def test_discriminator_term_hand_values_and_sign():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 3.0])
    b1, b2 = torch.tensor(0.5), torch.tensor(-2.0)
    rho1, rho2 = 0.1, 0.01
    # Gain of eq. 18: 1/2 rho1 D(x)^2 b1 + [1/4 rho2 D(x)^4 + 1/2 rho2 D(G(z))^2 D(x)^2] b2; the term is its negative.
    gain = torch.tensor([0.05 * 4 * 0.5 + (0.0025 * 16 + 0.005 * 1 * 4) * -2.0,
                         0.05 * 1 * 0.5 + (0.0025 * 1 + 0.005 * 9 * 1) * -2.0])
    torch.testing.assert_close(discriminator_bmc_term(real, fake, b1, b2, rho1, rho2), -gain)


def test_per_sample_increments_pair_with_samples_and_keep_the_logits_shape():
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0], [3.0]])
    b1, b2 = torch.tensor([0.5, -0.5]), torch.tensor([1.0, 2.0])
    term = discriminator_bmc_term(real, fake, b1, b2, 0.1, 0.01)
    assert term.shape == real.shape
    for i in range(2):
        torch.testing.assert_close(term[i], discriminator_bmc_term(real[i], fake[i], b1[i], b2[i], 0.1, 0.01))
    g_term = generator_bmc_term(fake, b1, b2, 0.1, 0.01)
    assert g_term.shape == fake.shape
    torch.testing.assert_close(g_term[1, 0], generator_bmc_term(fake[1, 0], b1[1], b2[1], 0.1, 0.01))
    with pytest.raises(ValueError, match='pair up'):
        discriminator_bmc_term(real, fake[:1], b1, b2, 0.1, 0.01)


def test_gradients_match_the_formulas_gradcheck():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(5, dtype=torch.float64, generator=generator).requires_grad_()
    fake = (torch.randn(5, dtype=torch.float64, generator=generator) + 0.5).requires_grad_() # Away from s = 0.
    b1, b2 = torch.tensor(0.3, dtype=torch.float64), torch.randn(5, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda r, f: discriminator_bmc_term(r, f, b1, b2, 0.7, 0.4), (real, fake))
    assert torch.autograd.gradcheck(lambda f: generator_bmc_term(f, b1, b2, 0.7, 0.4), (fake,))
    # And the analytic gradients: d/dD(x) of the gain, d/dD(G(z)) of the gain, d/ds of br.
    rho1, rho2 = 0.7, 0.4
    discriminator_bmc_term(real, fake, b1, b2, rho1, rho2).sum().backward()
    r, f = real.detach(), fake.detach()
    torch.testing.assert_close(real.grad, -(rho1 * r * b1 + (rho2 * r ** 3 + rho2 * f ** 2 * r) * b2))
    torch.testing.assert_close(fake.grad, -(rho2 * f * r ** 2 * b2))
    fake.grad = None
    generator_bmc_term(fake, b1, b2, rho1, rho2).sum().backward()
    torch.testing.assert_close(fake.grad, rho1 * f * b1.abs() + 0.5 * rho2 * f * b2.abs())


def test_sampler_defaults_are_the_authors():
    sampler = BrownianSampler()
    assert (sampler.rho1, sampler.rho2) == (0.1, 0.01)
    assert (sampler.b1_mean, sampler.b1_std, sampler.b2_mean, sampler.b2_std) == (0.0, 0.01, 1.0, 0.05)
    assert not sampler.per_sample
    b1, b2 = sampler.sample(8, torch.device('cpu'))
    assert b1.shape == () and b2.shape == () and b1.dtype == torch.float32


def test_sampler_statistics_and_per_sample_shape():
    sampler = BrownianSampler(b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, per_sample=True, seed=5)
    b1, b2 = sampler.sample(20000, torch.device('cpu'))
    assert b1.shape == (20000,) and b2.shape == (20000,)
    assert abs(float(b1.mean())) < 0.001 and float(b1.std()) == pytest.approx(0.01, rel=0.03)
    assert float(b2.mean()) == pytest.approx(1.0, abs=0.002) and float(b2.std()) == pytest.approx(0.05, rel=0.03)


def test_sampler_is_reproducible_and_independent_of_the_global_rng():
    draws = []
    for global_seed in [0, 123]: # Like two ranks, or two runs, whose other random numbers differ.
        torch.manual_seed(global_seed)
        sampler = BrownianSampler(seed=7)
        draws.append(torch.stack([torch.stack(sampler.sample(4, torch.device('cpu'))) for _ in range(5)]))
        torch.randn(10)
    assert torch.equal(draws[0], draws[1])
    assert len(set(draws[0][:, 0].tolist())) == 5 # A new draw per call.
    other = BrownianSampler(seed=8).sample(4, torch.device('cpu'))
    assert not torch.equal(torch.stack(other), draws[0][0])


def test_sampler_rejects_negative_parameters():
    with pytest.raises(ValueError, match='b2_std'):
        BrownianSampler(b2_std=-0.1)


def test_controller_draws_and_applies_the_term_to_its_target_only():
    fake, real = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    on_g = BrownianMotionController('G', BrownianSampler(seed=3))
    b1, b2 = BrownianSampler(seed=3).sample(2, torch.device('cpu'))
    torch.testing.assert_close(on_g.generator_term(fake), generator_bmc_term(fake, b1, b2, 0.1, 0.01))
    assert torch.equal(on_g.discriminator_term(real, fake), torch.zeros(2))
    on_d = BrownianMotionController('D', BrownianSampler(rho1=0.5, rho2=0.2, seed=3))
    torch.testing.assert_close(on_d.discriminator_term(real, fake), discriminator_bmc_term(real, fake, b1, b2, 0.5, 0.2))
    assert torch.equal(on_d.generator_term(fake), torch.zeros(2))
    with pytest.raises(ValueError, match='Unknown BMC target'):
        BrownianMotionController('both', BrownianSampler())
