"""Brownian Motion Controller (BMC) loss terms.

Luo, Zhu, Chen, Zhu, "Stabilizing GANs' Training with Brownian Motion Controller", ICML 2023 (arXiv 2306.10468).
The paper's controller for Dirac-GANs is dX = f(X) dt + rho1 X dB1 + rho2 |X|^beta X dB2 (see `ganpatch.dirac`);
for normal GANs it turns into extra loss terms with random weights (the increments B1', B2'):

- on D (paper eq. 17-18, used for the WGAN series): the objective D MAXIMIZES gains
      1/2 rho1 D(x)^2 B1' + [1/4 rho2 D(x)^4 + 1/2 rho2 D(G(z))^2 D(x)^2] B2'.
  `discriminator_bmc_term` returns the NEGATIVE of that gain, per sample, to be ADDED to a minimized D loss.
- on G (the authors' StyleGAN2-ADA code, commit 7d9eae2), with s = D(G(z)) the fake logits:
      br = 1/2 rho1 |s^2 b1| + 1/4 rho2 |s^2 b2|,
  returned by `generator_bmc_term`, to be SUBTRACTED from the minimized generator loss softplus(-s).

The increments are drawn by `BrownianSampler`; the authors drew one (b1, b2) per step, shared by the batch,
with b1 ~ N(0, 0.01^2) and b2 ~ N(1, 0.05^2) (std 0.01 and 0.05), and used rho1 = 0.1, rho2 = 0.01.
"""

import torch

BMC_TARGETS = ('none', 'G', 'D')


def _per_sample(b, logits):
    """Broadcast a 0-dim increment, or one per sample ([batch]), against logits of shape [batch, ...]."""
    b = b.to(device=logits.device, dtype=logits.dtype)
    return b.reshape([-1] + [1] * (logits.ndim - 1)) if b.ndim == 1 else b


def generator_bmc_term(fake_logits, b1, b2, rho1, rho2):
    """br = 1/2 rho1 |s^2 b1| + 1/4 rho2 |s^2 b2| per sample (shape of `fake_logits`), to SUBTRACT from the
    generator loss (authors' StyleGAN2-ADA code, commit 7d9eae2). The float operations are theirs, in their order
    (s * s once per term rather than s.square() once, 1/4 |.| then times rho2), so that the loss and its gradient
    match theirs bit for bit given the same (b1, b2)."""
    s = fake_logits
    return 0.5 * rho1 * (s * s * _per_sample(b1, s)).abs() + 0.25 * (s * s * _per_sample(b2, s)).abs() * rho2


def discriminator_bmc_term(real_logits, fake_logits, b1, b2, rho1, rho2):
    """Per-sample term to ADD to the minimized D loss: minus the gain of paper eq. 18,
    -(1/2 rho1 D(x)^2 b1 + [1/4 rho2 D(x)^4 + 1/2 rho2 D(G(z))^2 D(x)^2] b2), shape of `real_logits`.
    Gradients flow through both logits (the cross term couples them)."""
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f'real_logits {tuple(real_logits.shape)} and fake_logits {tuple(fake_logits.shape)} must pair up sample by sample')
    real2 = real_logits.square()
    gain = 0.5 * rho1 * real2 * _per_sample(b1, real_logits) \
        + (0.25 * rho2 * real2.square() + 0.5 * rho2 * fake_logits.square() * real2) * _per_sample(b2, real_logits)
    return -gain


class BrownianSampler:
    """Draws the increments (b1, b2): b1 ~ N(b1_mean, b1_std^2), b2 ~ N(b2_mean, b2_std^2).

    Defaults are the authors' (rho1 = 0.1, rho2 = 0.01, b1 ~ N(0, 0.01^2), b2 ~ N(1, 0.05^2)). One draw per
    call shared by the whole batch (0-dim tensors, as the authors did), or with `per_sample` one draw per
    sample (shape [batch_size]). The sampler owns a CPU `torch.Generator` seeded with `seed`, so the sequence
    is the same in every run, on every rank and on every device, whatever else consumes random numbers.
    """

    def __init__(self, rho1=0.1, rho2=0.01, b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, per_sample=False, seed=0):
        for name, value in [('rho1', rho1), ('rho2', rho2), ('b1_std', b1_std), ('b2_std', b2_std)]:
            if not value >= 0:
                raise ValueError(f'BMC {name} must be >= 0, got {value!r}')
        self.rho1, self.rho2 = float(rho1), float(rho2)
        self.b1_mean, self.b1_std = float(b1_mean), float(b1_std)
        self.b2_mean, self.b2_std = float(b2_mean), float(b2_std)
        self.per_sample = bool(per_sample)
        self.seed = int(seed)
        self.generator = torch.Generator(device='cpu').manual_seed(self.seed)

    def sample(self, batch_size, device):
        """(b1, b2) as float32 tensors on `device`: 0-dim, or shape [batch_size] with `per_sample`."""
        shape = [batch_size] if self.per_sample else []
        noise = torch.randn([2] + shape, generator=self.generator)
        b1 = self.b1_mean + self.b1_std * noise[0]
        b2 = self.b2_mean + self.b2_std * noise[1]
        return b1.to(device), b2.to(device)


class BrownianMotionController:
    """BMC on one player (`target` in BMC_TARGETS): draws (b1, b2) from `sampler` and returns the loss term.

    `generator_term` is non-zero only for target 'G' and `discriminator_term` only for target 'D' (zeros
    otherwise, without a draw), so a loss can call both unconditionally.
    """

    def __init__(self, target, sampler):
        if target not in BMC_TARGETS:
            raise ValueError(f'Unknown BMC target {target!r}; expected one of {", ".join(BMC_TARGETS)}')
        self.target = target
        self.sampler = sampler

    def generator_term(self, fake_logits):
        """Per-sample br to SUBTRACT from the generator loss (see `generator_bmc_term`)."""
        if self.target != 'G':
            return torch.zeros_like(fake_logits)
        b1, b2 = self.sampler.sample(fake_logits.shape[0], fake_logits.device)
        return generator_bmc_term(fake_logits, b1, b2, self.sampler.rho1, self.sampler.rho2)

    def discriminator_term(self, real_logits, fake_logits):
        """Per-sample term to ADD to the minimized D loss (see `discriminator_bmc_term`)."""
        if self.target != 'D':
            return torch.zeros_like(real_logits)
        b1, b2 = self.sampler.sample(real_logits.shape[0], real_logits.device)
        return discriminator_bmc_term(real_logits, fake_logits, b1, b2, self.sampler.rho1, self.sampler.rho2)
