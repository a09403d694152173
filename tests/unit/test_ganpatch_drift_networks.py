"""ganpatch.drift on small convolutional networks (spectral norm, BatchNorm, in-place activations, as in SN-GAN):
each term's double-backward gradient against a finite difference of the regularizer, and one training step per
preset and update with ganpatch's clipped SGD."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.spectral_norm import spectral_norm

from ganpatch import drift, optim

Z_DIM, BATCH = 4, 3


def networks():
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z_DIM, 4 * 4 * 4), nn.Unflatten(1, (4, 4, 4)), nn.BatchNorm2d(4), nn.ReLU(True),
                      nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), nn.Tanh())
    D = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3, stride=2, padding=1)), nn.LeakyReLU(0.1, inplace=True),
                      nn.Flatten(), spectral_norm(nn.Linear(4 * 4 * 4, 1)))
    return G.double(), D.double()


def players(G, D, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample_disc = lambda: (torch.rand(BATCH, 3, 8, 8, generator=generator, dtype=torch.float64),
                           torch.randn(BATCH, Z_DIM, generator=generator, dtype=torch.float64))
    sample_gen = lambda: torch.randn(BATCH, Z_DIM, generator=generator, dtype=torch.float64)
    disc = drift.Player(D, lambda b: F.softplus(-D(b[0])).mean() + F.softplus(D(G(b[1]))).mean(), sample_disc)
    gen = drift.Player(G, lambda z: -F.softplus(D(G(z))).mean(), sample_gen)
    return disc, gen


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _other(name):
    return 'gen' if name == 'disc' else 'disc'


@pytest.mark.parametrize('name', drift.PLAYERS)
@pytest.mark.parametrize('term', drift.TERMS)
def test_double_backward_matches_a_finite_difference(name, term):
    """Eval mode (fixed spectral-norm vectors and BatchNorm statistics), float64, one fixed minibatch per loss:
    d/de R(p + e d) at e = 0 against <grad_p R, d>, with the stop-gradient factor v held at the start point."""
    G, D = networks()
    G.eval(), D.eval()
    disc, gen = players(G, D)
    batches = {'disc': disc.sample(), 'gen': gen.sample()}
    disc.sample, gen.sample = (lambda: batches['disc']), (lambda: batches['gen']) # Biased: one batch per loss.
    player, other = (disc, gen) if name == 'disc' else (gen, disc)
    regularizer = drift.DriftRegularizer(disc, gen, {p: drift.Terms(**{term: 1.0}) for p in drift.PLAYERS}, estimator='biased')
    _, total = regularizer.gradients(name)
    loss_grad = torch.autograd.grad(player.loss(batches[name]), player.params)
    analytic = flat(total) - flat(loss_grad)

    grad_of = lambda loss, params: torch.autograd.grad(loss, params)
    fixed = {'self_norm': grad_of(player.loss(batches[name]), player.params),
             'other_norm': grad_of(other.loss(batches[_other(name)]), other.params),
             'other_dot_prod': grad_of(other.loss(batches[_other(name)]), other.params)}[term]

    def regularizer_value():
        if term == 'self_norm':
            u = grad_of(player.loss(batches[name]), player.params)
        elif term == 'other_norm':
            u = grad_of(other.loss(batches[_other(name)]), other.params)
        else:
            u = grad_of(player.loss(batches[name]), other.params)
        return float(flat(u) @ flat(fixed))

    direction = [torch.randn_like(p) for p in player.params]
    eps = 1e-5
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(player.params, direction):
                p.add_(sign * eps * d)
        values.append(regularizer_value())
        with torch.no_grad():
            for p, d in zip(player.params, direction):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert float(analytic @ flat(direction)) == pytest.approx(numeric, rel=1e-5, abs=1e-10)
    assert analytic.abs().max() > 0


@pytest.mark.parametrize('preset, lam', [('none', None), ('cancel-interaction', None),
                                         ('cancel-interaction-strengthen-self', None), ('co', 0.1), ('sga', 0.1)])
@pytest.mark.parametrize('update', drift.UPDATES)
def test_one_training_step_per_preset_in_train_mode(preset, lam, update):
    G, D = networks()
    disc, gen = players(G, D)
    coeffs = drift.preset_coefficients(preset, lam, lr_disc=0.1, lr_gen=0.05, update=update)
    regularizer = drift.DriftRegularizer(disc, gen, coeffs)
    opt_D = optim.build_optimizer('sgd', D.parameters(), lr=0.1, clip_mode='norm', clip_threshold=1.0)
    opt_G = optim.build_optimizer('sgd', G.parameters(), lr=0.05, clip_mode='norm', clip_threshold=1.0)
    before = {name: flat(p.detach() for p in player.params) for name, player in regularizer.players.items()}
    if update == 'simultaneous':
        losses = regularizer.backward_simultaneous()
        assert all(p.grad is not None for p in disc.params + gen.params)
        opt_D.step(), opt_G.step()
    else:
        losses = {'disc': regularizer.backward('disc')}
        assert all(p.grad is None for p in gen.params) # D's backward leaves G's .grad alone.
        opt_D.step()
        losses['gen'] = regularizer.backward('gen')
        opt_G.step()
    for name, player in regularizer.players.items():
        after = flat(p.detach() for p in player.params)
        assert torch.isfinite(after).all() and torch.isfinite(losses[name])
        assert not torch.equal(after, before[name])
        assert opt_D.skipped_steps == opt_G.skipped_steps == 0
