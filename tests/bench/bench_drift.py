"""Cost of one training step with each drift preset (and Runge-Kutta), as a ratio to the plain SGD step timed in
the same run (medians over interleaved repeats), on a small SN-GAN-like pair defined here.

    PYTHONPATH=overlays/common python tests/bench/bench_drift.py [--device cpu|cuda] [--repeats 10]
                                                                [--width 16] [--batch 32] [--threads N]

The networks follow the shape of pytorch-gan-collections' cnn32 SN-GAN (G: linear, 3 transposed convolutions
with BatchNorm and ReLU, a 3x3 convolution and tanh; D: 7 spectrally normalized convolutions with LeakyReLU(0.1)
and a linear head), with channels scaled by --width (64 is the upstream size). The loss is the paper's zero-sum
loss: L_D = softplus(-D(x)) + softplus(D(G(z))), L_G = -softplus(D(G(z))). Every step is simultaneous (both
gradients at the same point, then both SGD steps, lr D 1e-2, G 5e-3) unless it says alternating.

  plain SGD step                       D's loss on a detached G(z), backward; G's loss, backward into G only; the
                                       two SGD steps (the baseline of every ratio)
  none, <update>                       the same through `ganpatch.drift` with zero coefficients (the API's cost)
  <preset>, simultaneous, <estimator>  `DriftRegularizer.backward_simultaneous()`, then both steps
  <preset>, alternating, <estimator>   `backward('disc')`, D's step, `backward('gen')`, G's step
  Runge-Kutta <order>                  `RungeKutta.backward`, then the two SGD steps
"""

import argparse
import copy
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.spectral_norm import spectral_norm

from ganpatch import drift, optim, runge_kutta
from timing import interleaved_medians

Z_DIM = 128
LR_DISC, LR_GEN = 1e-2, 5e-3
LAMBDA = 0.01 # co / sga strength: any non-zero value costs the same.


class Generator(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(Z_DIM, 4 * 4 * 8 * width)
        layers = []
        for c_in, c_out in [(8 * width, 4 * width), (4 * width, 2 * width), (2 * width, width)]:
            layers += [nn.BatchNorm2d(c_in), nn.ReLU(True), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
        self.main = nn.Sequential(*layers, nn.BatchNorm2d(width), nn.ReLU(True), nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.main(self.linear(z).view(z.shape[0], -1, 4, 4))


class Discriminator(nn.Module):
    def __init__(self, width):
        super().__init__()
        shapes = [(3, width, 3, 1), (width, 2 * width, 4, 2), (2 * width, 2 * width, 3, 1), (2 * width, 4 * width, 4, 2),
                  (4 * width, 4 * width, 3, 1), (4 * width, 8 * width, 4, 2), (8 * width, 8 * width, 3, 1)]
        layers = []
        for c_in, c_out, kernel, stride in shapes:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=1)), nn.LeakyReLU(0.1, inplace=True)]
        self.main = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(4 * 4 * 8 * width, 1))

    def forward(self, x):
        return self.linear(torch.flatten(self.main(x), start_dim=1))


class Setup:
    """One copy of the networks, their SGD optimizers and the players' samplers."""

    def __init__(self, template_g, template_d, batch, device, generator):
        self.G, self.D = copy.deepcopy(template_g), copy.deepcopy(template_d)
        self.opt_G = optim.build_optimizer('sgd', self.G.parameters(), lr=LR_GEN)
        self.opt_D = optim.build_optimizer('sgd', self.D.parameters(), lr=LR_DISC)
        self.batch, self.device, self.generator = batch, device, generator
        self.real = torch.rand(4 * batch, 3, 32, 32, generator=generator).to(device) * 2 - 1 # A small fixed "dataset".

    def z(self):
        return torch.randn(self.batch, Z_DIM, generator=self.generator).to(self.device)

    def real_batch(self):
        index = torch.randint(len(self.real), (self.batch,), generator=self.generator).to(self.device)
        return self.real[index]

    def players(self):
        disc = drift.Player(self.D, lambda b: F.softplus(-self.D(b[0])).mean() + F.softplus(self.D(self.G(b[1]))).mean(),
                            lambda: (self.real_batch(), self.z()))
        gen = drift.Player(self.G, lambda z: -F.softplus(self.D(self.G(z))).mean(), self.z)
        return disc, gen

    def zero_grad(self):
        self.opt_D.zero_grad(set_to_none=True)
        self.opt_G.zero_grad(set_to_none=True)

    def step(self):
        self.opt_D.step()
        self.opt_G.step()


def plain_step(s):
    def step():
        s.zero_grad()
        real, fake = s.real_batch(), s.G(s.z())
        (F.softplus(-s.D(real)).mean() + F.softplus(s.D(fake.detach())).mean()).backward()
        loss_g = -F.softplus(s.D(s.G(s.z()))).mean()
        loss_g.backward(inputs=list(s.G.parameters()))
        s.step()
    return step


def regularized_step(s, coefficients, estimator, update):
    regularizer = drift.DriftRegularizer(*s.players(), coefficients, estimator=estimator)

    def simultaneous():
        s.zero_grad()
        regularizer.backward_simultaneous()
        s.step()

    def alternating():
        s.zero_grad()
        regularizer.backward('disc')
        s.opt_D.step()
        regularizer.backward('gen')
        s.opt_G.step()
    return simultaneous if update == 'simultaneous' else alternating


def runge_kutta_step(s, order):
    rk = runge_kutta.RungeKutta(drift.DriftRegularizer(*s.players()), order)

    def step():
        s.zero_grad()
        rk.backward({'disc': LR_DISC, 'gen': LR_GEN})
        s.step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--width', type=int, default=None, help='channel width (64 = upstream; default 16 on cpu, 64 on cuda)')
    parser.add_argument('--batch', type=int, default=None, help='batch size (default 32 on cpu, 128 on cuda)')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch CPU threads (default torch's; 1 is steadier on a CPU shared with other jobs)")
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device=cuda needs a CUDA GPU')
    if args.repeats < 1:
        parser.error('--repeats must be >= 1')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    width = args.width or (64 if device.type == 'cuda' else 16)
    batch = args.batch or (128 if device.type == 'cuda' else 32)
    torch.manual_seed(0)
    template_g, template_d = Generator(width).to(device), Discriminator(width).to(device)
    generator = torch.Generator().manual_seed(0)
    fresh = lambda: Setup(template_g, template_d, batch, device, generator)

    variants = {'plain SGD step': plain_step(fresh())}
    for update in drift.UPDATES:
        schedule = dict(lr_disc=LR_DISC, lr_gen=LR_GEN, update=update)
        variants[f'none, {update}'] = regularized_step(fresh(), drift.preset_coefficients('none', **schedule), 'unbiased', update)
        for preset in drift.PRESETS[1:]:
            coefficients = drift.preset_coefficients(preset, LAMBDA if preset in drift.LAMBDA_PRESETS else None, **schedule)
            for estimator in drift.ESTIMATORS:
                variants[f'{preset}, {update}, {estimator}'] = regularized_step(fresh(), coefficients, estimator, update)
    for order in (2, 4):
        variants[f'Runge-Kutta {order}'] = runge_kutta_step(fresh(), order)

    load_before = os.getloadavg()[0]
    median = interleaved_medians(variants, device, args.repeats, warmup=2)

    count = lambda module: sum(p.numel() for p in module.parameters())
    print(f'SN-GAN-like pair: G {count(template_g) / 1e6:.2f}M, D {count(template_d) / 1e6:.2f}M parameters (width {width}), '
          f'batch {batch}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} '
          f'interleaved repeats, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after')
    base = median['plain SGD step']
    print(f'  {"variant":58s} {"ms/step":>9s} {"ratio":>7s}')
    for name, value in median.items():
        print(f'  {name:58s} {value * 1e3:9.1f} {value / base:7.2f}')


if __name__ == '__main__':
    main()
