"""ganpatch.drift: drift coefficients by hand (both conventions, both orders, several steps), the presets, the
validation messages, each regularizer gradient on the Dirac-GAN against its closed form, the unbiased and biased
estimators' means on a toy with known noise, the one-round error order of the two conventions, and the averaging
across 2 gloo processes."""

import math
import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from ganpatch import drift, drift_study
from ganpatch.drift import Terms

LR_DISC, LR_GEN = 0.01, 0.05


def assert_terms(actual, expected):
    assert actual.values() == pytest.approx(expected.values(), abs=1e-15), (actual, expected)


#----------------------------------------------------------------------------
# Drift coefficients against hand-computed values (lr_disc = 0.01, lr_gen = 0.05).

PAPER_CASES = [
    # (update, first, disc_steps, gen_steps, disc coefficients, gen coefficients)
    ('simultaneous', 'disc', 1, 1, Terms(0.005, 0, 0.005), Terms(0.025, 0, 0.025)),
    ('simultaneous', 'gen', 1, 1, Terms(0.005, 0, 0.005), Terms(0.025, 0, 0.025)), # The order does not matter.
    # Second player gen: -(0.05/2)(2 * 0.01/0.05 - 1) = -0.025 * (-0.6) = 0.015.
    ('alternating', 'disc', 1, 1, Terms(0.005, 0, 0.005), Terms(0.025, 0, 0.015)),
    # Second player disc: -(0.01/2)(2 * 0.05/0.01 - 1) = -0.005 * 9 = -0.045.
    ('alternating', 'gen', 1, 1, Terms(0.005, 0, -0.045), Terms(0.025, 0, 0.025)),
    # self_norm = lr / (2 n): 0.01 / 10 and 0.05 / 4; the interaction terms do not depend on n.
    ('alternating', 'disc', 5, 2, Terms(0.001, 0, 0.005), Terms(0.0125, 0, 0.015)),
]

COMMON_CLOCK_CASES = [
    ('simultaneous', 'disc', 1, 1, Terms(0.005, 0, 0.025), Terms(0.025, 0, 0.005)), # The other player's rate.
    ('alternating', 'disc', 1, 1, Terms(0.005, 0, 0.025), Terms(0.025, 0, -0.005)),
    ('alternating', 'gen', 1, 1, Terms(0.005, 0, -0.025), Terms(0.025, 0, 0.005)),
    # n_gen * lr_gen / 2 = 2 * 0.05 / 2 and -n_disc * lr_disc / 2 = -5 * 0.01 / 2; self_norm = lr / 2.
    ('alternating', 'disc', 5, 2, Terms(0.005, 0, 0.05), Terms(0.025, 0, -0.025)),
]


@pytest.mark.parametrize('convention, case', [('paper', case) for case in PAPER_CASES]
                         + [('common-clock', case) for case in COMMON_CLOCK_CASES])
def test_drift_coefficients_by_hand(convention, case):
    update, first, disc_steps, gen_steps, disc, gen = case
    coeffs = drift.drift_coefficients(LR_DISC, LR_GEN, update=update, first=first, disc_steps=disc_steps,
                                      gen_steps=gen_steps, convention=convention)
    assert_terms(coeffs['disc'], disc)
    assert_terms(coeffs['gen'], gen)


@pytest.mark.parametrize('update, first', [('simultaneous', 'disc'), ('alternating', 'disc'), ('alternating', 'gen')])
def test_conventions_agree_for_equal_learning_rates_and_single_steps(update, first):
    paper, common = (drift.drift_coefficients(0.2, 0.2, update=update, first=first, convention=c) for c in drift.CONVENTIONS)
    for player in drift.PLAYERS:
        assert_terms(paper[player], common[player])
    if update == 'alternating': # The second player's interaction term flips sign: -(lr/2)(2 - 1).
        assert paper[{'disc': 'gen', 'gen': 'disc'}[first]].other_dot_prod == pytest.approx(-0.1)


def test_presets_scale_the_drift_or_add_constants():
    schedule = dict(lr_disc=LR_DISC, lr_gen=LR_GEN, update='simultaneous')
    cancel = drift.preset_coefficients('cancel-interaction', **schedule)
    assert_terms(cancel['disc'], Terms(0, 0, -0.005))
    assert_terms(cancel['gen'], Terms(0, 0, -0.025))
    strengthen = drift.preset_coefficients('cancel-interaction-strengthen-self', **schedule)
    assert_terms(strengthen['disc'], Terms(0.005, 0, -0.005))
    assert_terms(strengthen['gen'], Terms(0.025, 0, -0.025))
    for player in drift.PLAYERS:
        assert_terms(drift.preset_coefficients('co', 0.3, **schedule)[player], Terms(0.3, 0.3, 0))
        assert_terms(drift.preset_coefficients('sga', 0.3, **schedule)[player], Terms(0, 0.3, 0))
        assert drift.preset_coefficients('none', **schedule)[player].is_zero()


def test_combine_takes_per_player_multipliers_and_constants():
    dd = drift.drift_coefficients(LR_DISC, LR_GEN, update='alternating')
    combined = drift.combine(dd, {'disc': Terms(2, 0, -1), 'gen': Terms(0, 0, 1)}, Terms(0, 0.5, 0.25))
    assert_terms(combined['disc'], Terms(0.01, 0.5, 0.25 - 0.005))
    assert_terms(combined['gen'], Terms(0, 0.5, 0.25 + 0.015))


#----------------------------------------------------------------------------
# Validation: bad settings raise ValueError with a message a command line can print.

@pytest.mark.parametrize('kwargs, message', [
    (dict(preset='cancel'), "Unknown drift preset 'cancel'; expected one of none, cancel-interaction"),
    (dict(preset='cancel-interaction', lam=0.1), "'cancel-interaction' takes none, got lambda = 0.1"),
    (dict(preset='none', lam=0.1), "'none' takes none"),
    (dict(preset='co'), "The drift preset 'co' needs lambda"),
    (dict(preset='sga', lam=0.0), "lambda of 'sga' must be a finite number > 0, got 0.0"),
    (dict(preset='co', lam=math.nan), 'must be a finite number > 0, got nan'),
    (dict(estimator='exact'), "Unknown estimator 'exact'; expected one of unbiased, biased"),
    (dict(update='sequential'), "Unknown update 'sequential'"),
    (dict(update='alternating', first='critic'), "Unknown first player 'critic'; expected one of disc, gen"),
    (dict(update='alternating', disc_steps=0), 'disc_steps must be an integer >= 1, got 0'),
    (dict(update='alternating', gen_steps=1.5), 'gen_steps must be an integer >= 1, got 1.5'),
    (dict(disc_steps=5), 'Simultaneous updates take one step per player per round, got disc_steps=5'),
    (dict(convention='mine'), "Unknown convention 'mine'; expected one of paper, common-clock"),
])
def test_check_setup_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError) as error:
        drift.check_setup(**kwargs)
    assert message in str(error.value)


def test_check_setup_accepts_the_papers_configuration():
    drift.check_setup(preset='cancel-interaction', estimator='unbiased', update='simultaneous')
    drift.check_setup(preset='co', lam=0.01, update='alternating', first='gen', disc_steps=5)


@pytest.mark.parametrize('lr', [0.0, -1e-3, math.inf, True])
def test_learning_rates_must_be_positive(lr):
    with pytest.raises(ValueError, match='lr_gen must be a finite number > 0'):
        drift.drift_coefficients(0.1, lr)


def test_regularizer_rejects_unknown_estimator_and_players():
    disc, gen = dirac_players(0.1, 0.2)
    with pytest.raises(ValueError, match="Unknown estimator 'fast'"):
        drift.DriftRegularizer(disc, gen, estimator='fast')
    with pytest.raises(ValueError, match='exactly the players'):
        drift.DriftRegularizer(disc, gen, {'disc': Terms()})
    with pytest.raises(ValueError, match="Unknown player 'critic'"):
        drift.DriftRegularizer(disc, gen).gradients('critic')


def test_player_needs_parameters():
    with pytest.raises(ValueError, match='at least one parameter'):
        drift.Player(torch.nn.ReLU(), loss=lambda batch: torch.tensor(0.0))


#----------------------------------------------------------------------------
# Regularizer gradients on the Dirac-GAN against their closed forms (as the authors' gan_grads_calculator_test):
# D(t) = psi t, G = theta, data at 0; L_D = softplus(psi theta) + log 2, L_G = -softplus(psi theta) (saturating).

def dirac_players(psi, theta, detach_fake=False):
    psi = torch.nn.Parameter(torch.tensor(psi, dtype=torch.float64))
    theta = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float64))
    real, zero = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)

    def disc_loss(batch):
        fake = theta.detach() if detach_fake else theta
        return F.binary_cross_entropy_with_logits(psi * real, zero + 1) + F.binary_cross_entropy_with_logits(psi * fake, zero)

    def gen_loss(batch):
        return -F.binary_cross_entropy_with_logits(psi * theta, zero)
    return drift.Player([psi], disc_loss), drift.Player([theta], gen_loss)


def dirac_closed_forms(psi, theta):
    """{player: (loss gradient, Terms of the regularizer gradients)}; s = sigmoid(psi theta), s' = s (1 - s)."""
    s = 1 / (1 + math.exp(-psi * theta))
    ds = s * (1 - s)
    disc_cross = psi * s ** 2 + psi ** 2 * theta * s * ds # (d grad_theta L_G / d psi) grad_theta L_G
    gen_cross = theta * s ** 2 + theta ** 2 * psi * s * ds
    return {'disc': (s * theta, Terms(self_norm=s * ds * theta ** 3, other_norm=disc_cross, other_dot_prod=-disc_cross)),
            'gen': (-s * psi, Terms(self_norm=s * ds * psi ** 3, other_norm=gen_cross, other_dot_prod=-gen_cross))}


INIT_VALUES = [-0.5, -0.1, 0.1, 0.5]


@pytest.mark.parametrize('psi', INIT_VALUES)
@pytest.mark.parametrize('theta', INIT_VALUES)
@pytest.mark.parametrize('term', drift.TERMS)
def test_each_regularizer_gradient_on_the_dirac_gan(psi, theta, term):
    coefficient = 10.0 # The authors' test value.
    disc, gen = dirac_players(psi, theta)
    coeffs = {player: Terms(**{term: coefficient}) for player in drift.PLAYERS}
    expected = dirac_closed_forms(psi, theta)
    for estimator in drift.ESTIMATORS: # A deterministic loss: both estimators are exact.
        regularizer = drift.DriftRegularizer(disc, gen, coeffs, estimator=estimator)
        for player in drift.PLAYERS:
            loss_grad, terms = expected[player]
            _, (grad,) = regularizer.gradients(player)
            assert float(grad) == pytest.approx(loss_grad + coefficient * getattr(terms, term), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize('preset, lam', [('cancel-interaction-strengthen-self', None), ('co', 0.3), ('sga', 0.3)])
def test_preset_gradients_on_the_dirac_gan(preset, lam):
    psi, theta, lr = 0.5, -0.1, 0.1
    coeffs = drift.preset_coefficients(preset, lam, lr_disc=lr, lr_gen=2 * lr, update='alternating')
    disc, gen = dirac_players(psi, theta)
    regularizer = drift.DriftRegularizer(disc, gen, coeffs)
    for player, (loss_grad, terms) in dirac_closed_forms(psi, theta).items():
        expected = loss_grad + sum(c * t for c, t in zip(coeffs[player].values(), terms.values()))
        assert float(regularizer.gradients(player)[1][0]) == pytest.approx(expected, rel=1e-12)


def test_backward_accumulates_into_own_grad_only():
    disc, gen = dirac_players(0.5, 0.1)
    coeffs = drift.preset_coefficients('cancel-interaction', lr_disc=0.1, lr_gen=0.1)
    regularizer = drift.DriftRegularizer(disc, gen, coeffs)
    _, (expected,) = regularizer.gradients('disc')
    disc.params[0].grad = torch.tensor(1.0, dtype=torch.float64)
    loss = regularizer.backward('disc')
    assert float(disc.params[0].grad) == pytest.approx(1.0 + float(expected), rel=1e-14)
    assert gen.params[0].grad is None
    assert float(loss) == pytest.approx(math.log(2) + math.log1p(math.exp(0.05)), rel=1e-14)
    assert not loss.requires_grad


def test_a_detached_fake_is_reported_when_an_interaction_term_needs_it():
    disc, gen = dirac_players(0.5, 0.1, detach_fake=True)
    regularizer = drift.DriftRegularizer(disc, gen, drift.preset_coefficients('cancel-interaction', lr_disc=0.1, lr_gen=0.1))
    with pytest.raises(ValueError, match="disc's loss does not depend on the gen parameters"):
        regularizer.gradients('disc')


#----------------------------------------------------------------------------
# Estimators on a toy with known noise. Coordinate i of x, y (N of them) is an independent copy of the game
#   L1 = (1 + xi) (x^2/2 + x y),   L2 = (1 + xi) (y^2/2 - x y),   xi ~ N(0, sigma^2), one xi per coordinate,
# so one call gives N independent estimates. Exact terms of the expected losses (coefficient 1):
#   disc: self_norm x + y, other_norm x - y, other_dot_prod y - x;  gen: self_norm y - x, other_norm x + y,
#   other_dot_prod -(x + y). A biased norm term multiplies by E[(1 + xi)^2] = 1 + sigma^2.

N, SIGMA, X0, Y0 = 20000, 1.0, 0.7, -0.4
EXACT = {('disc', 'self_norm'): X0 + Y0, ('disc', 'other_norm'): X0 - Y0, ('disc', 'other_dot_prod'): Y0 - X0,
         ('gen', 'self_norm'): Y0 - X0, ('gen', 'other_norm'): X0 + Y0, ('gen', 'other_dot_prod'): -(X0 + Y0)}


def noisy_players(seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(torch.full((N,), X0, dtype=torch.float64))
    y = torch.nn.Parameter(torch.full((N,), Y0, dtype=torch.float64))
    sample = lambda: SIGMA * torch.randn(N, generator=generator, dtype=torch.float64)
    disc = drift.Player([x], lambda xi: ((1 + xi) * (x ** 2 / 2 + x * y)).sum(), sample)
    gen = drift.Player([y], lambda xi: ((1 + xi) * (y ** 2 / 2 - x * y)).sum(), sample)
    return disc, gen, sample


@pytest.mark.parametrize('player, term', list(EXACT))
@pytest.mark.parametrize('mode', ['one player', 'simultaneous'])
def test_estimator_means_against_the_exact_term(player, term, mode):
    for estimator in drift.ESTIMATORS:
        disc, gen, sample = noisy_players(seed=drift.TERMS.index(term))
        coeffs = {p: Terms(**{term: 1.0}) for p in drift.PLAYERS}
        regularizer = drift.DriftRegularizer(disc, gen, coeffs, estimator=estimator)
        batch = sample()
        if mode == 'one player':
            _, (total,) = regularizer.gradients(player, batch)
        else: # The other player's step batch is its loss gradient's minibatch, shared as v.
            _, (total,) = regularizer.simultaneous_gradients({player: batch})[player]
        loss_grad = (1 + batch) * (X0 + Y0 if player == 'disc' else Y0 - X0)
        estimates = (total - loss_grad).numpy()
        mean, standard_error = estimates.mean(), estimates.std() / math.sqrt(N)
        expected = EXACT[player, term]
        if estimator == 'biased' and term != 'other_dot_prod':
            assert abs(mean - expected) > 20 * standard_error # The bias is visible...
            expected *= 1 + SIGMA ** 2                           # ... and it is the covariance of the two factors.
        assert abs(mean - expected) < 5 * standard_error, (estimator, mean, expected, standard_error)


@pytest.mark.parametrize('preset, lam', [('cancel-interaction-strengthen-self', None), ('co', 0.3), ('sga', 0.3)])
def test_simultaneous_gradients_equal_the_per_player_gradients(preset, lam):
    """Deterministic losses: sharing each player's loss gradient as the other's v changes nothing."""
    coeffs = drift.preset_coefficients(preset, lam, lr_disc=0.1, lr_gen=0.2)
    regularizer = drift.DriftRegularizer(*dirac_players(0.5, -0.1), coeffs)
    both = regularizer.simultaneous_gradients()
    for player in drift.PLAYERS:
        assert float(both[player][1][0]) == pytest.approx(float(regularizer.gradients(player)[1][0]), rel=1e-14)


def test_minibatch_draws_per_estimator_and_mode():
    draws = {'disc': 0, 'gen': 0}

    def counted(name, sample):
        def draw():
            draws[name] += 1
            return sample()
        return draw

    def count(estimator, call, coefficients=Terms(1.0, 1.0, 1.0)):
        disc, gen, sample = noisy_players(seed=0)
        disc.sample, gen.sample = counted('disc', sample), counted('gen', sample)
        draws.update(disc=0, gen=0)
        call(drift.DriftRegularizer(disc, gen, {p: coefficients for p in drift.PLAYERS}, estimator=estimator))
        return dict(draws)
    # One player: its step batch and self_norm's v; two of the other for other_norm (other_dot_prod reuses v).
    assert count('unbiased', lambda r: r.gradients('disc')) == {'disc': 2, 'gen': 2}
    assert count('biased', lambda r: r.gradients('disc')) == {'disc': 1, 'gen': 1}
    # Both players at once: each step batch's loss gradient is the other player's v.
    assert count('unbiased', lambda r: r.simultaneous_gradients()) == {'disc': 3, 'gen': 3}
    assert count('unbiased', lambda r: r.simultaneous_gradients(), Terms(other_dot_prod=1.0)) == {'disc': 1, 'gen': 1}
    assert count('unbiased', lambda r: [r.gradients(p) for p in drift.PLAYERS], Terms(other_dot_prod=1.0)) == {'disc': 2, 'gen': 2}


def test_backward_simultaneous_fills_both_grads():
    disc, gen = dirac_players(0.5, 0.1)
    regularizer = drift.DriftRegularizer(disc, gen, drift.preset_coefficients('cancel-interaction', lr_disc=0.1, lr_gen=0.1))
    expected = {p: float(regularizer.gradients(p)[1][0]) for p in drift.PLAYERS}
    losses = regularizer.backward_simultaneous()
    assert float(disc.params[0].grad) == pytest.approx(expected['disc'], rel=1e-14)
    assert float(gen.params[0].grad) == pytest.approx(expected['gen'], rel=1e-14)
    assert set(losses) == set(drift.PLAYERS)


#----------------------------------------------------------------------------
# One round of updates against the modified flow: the first-order modified flow leaves an O(lr^3) error
# (halving every learning rate divides it by ~8). The paper's coefficients do that only for equal per-round rates.

def one_round_error(lrs, update, steps, convention):
    game, start = drift_study.linear_game(0.2), np.array([0.08, -0.05])
    iterate = drift_study.euler(game, start, lrs, 1, update=update, steps=steps)[1]
    coeffs = drift.drift_coefficients(*lrs, update=update, disc_steps=steps[0], gen_steps=steps[1], convention=convention)
    field = drift_study.regularized_field(game, coeffs) # Linear: its matrix is its values on the basis vectors.
    rates = np.array([steps[0] * lrs[0], steps[1] * lrs[1]])
    matrix = rates[:, None] * np.stack([field(np.eye(2)[j]) for j in range(2)], axis=1)
    return np.linalg.norm(iterate - scipy.linalg.expm(matrix) @ start)


@pytest.mark.parametrize('lrs, update, steps', [((0.2, 0.1), 'simultaneous', (1, 1)), ((0.05, 0.2), 'alternating', (1, 1)),
                                                ((0.1, 0.1), 'alternating', (3, 1)), ((0.1, 0.2), 'alternating', (2, 3))])
def test_common_clock_flow_has_third_order_one_round_error(lrs, update, steps):
    ratios = {}
    for convention in drift.CONVENTIONS:
        errors = [one_round_error((lrs[0] * s, lrs[1] * s), update, steps, convention) for s in (0.5, 0.25)]
        ratios[convention] = errors[0] / errors[1]
    assert 6.5 < ratios['common-clock'] < 9.5, ratios
    assert 3.5 < ratios['paper'] < 4.5, ratios # Second order: the paper's coefficients miss a first-order term here.


def test_both_conventions_have_third_order_error_for_equal_rates():
    for convention in drift.CONVENTIONS:
        errors = [one_round_error((0.2 * s, 0.2 * s), 'alternating', (1, 1), convention) for s in (0.5, 0.25)]
        assert 6.5 < errors[0] / errors[1] < 9.5


#----------------------------------------------------------------------------
# torch.distributed: 2 gloo processes with different minibatches end with the same, averaged gradient.

def _distributed_worker(rank, world, port, out):
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        coeffs = {p: Terms(0.1, 0.2, 0.3) for p in drift.PLAYERS}
        grads = {}
        for name, all_reduce in [('local', None), ('averaged', drift.average_across_processes)]:
            disc, gen, sample = noisy_players(seed=100 + rank) # Same draws in both passes, different per rank.
            regularizer = drift.DriftRegularizer(disc, gen, coeffs, all_reduce=all_reduce)
            regularizer.backward('disc')
            grads[name] = disc.params[0].grad
        gathered = {name: [torch.empty_like(grad) for _ in range(world)] for name, grad in grads.items()}
        for name, grad in grads.items():
            torch.distributed.all_gather(gathered[name], grad)
        if rank == 0:
            torch.save({name: torch.stack(values) for name, values in gathered.items()}, out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow # Spawns two processes that each import torch.
def test_two_gloo_processes_step_with_the_same_averaged_gradient(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = os.fspath(tmp_path / 'grads.pt')
    torch.multiprocessing.spawn(_distributed_worker, args=(2, port, out), nprocs=2)
    result = torch.load(out)
    local, averaged = result['local'], result['averaged']
    assert not torch.equal(local[0], local[1]) # Different minibatches per rank...
    assert torch.equal(averaged[0], averaged[1]) # ... the same gradient on both...
    torch.testing.assert_close(averaged[0], local.mean(0), rtol=1e-12, atol=1e-12) # ... their mean.
