"""ganpatch.runge_kutta: the error order of RK1/2/4 on the linear game against its exact flow (with ganpatch's
SGD completing each step), the stage minibatches, the parameters left in place, the composition with norm
clipping (also for the drift regularizer: clip after the regularizer gradient is added) and the validation."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ganpatch import drift, optim, runge_kutta

EPS, START, HORIZON = 0.2, (0.08, -0.05), 4.0


def linear_players():
    """x' = -eps x + y, y' = -x - eps y as gradient descent: L1 = eps x^2/2 - x y, L2 = eps y^2/2 + x y."""
    x = torch.nn.Parameter(torch.tensor(START[0], dtype=torch.float64))
    y = torch.nn.Parameter(torch.tensor(START[1], dtype=torch.float64))
    disc = drift.Player([x], lambda batch: EPS * x ** 2 / 2 - x * y)
    gen = drift.Player([y], lambda batch: EPS * y ** 2 / 2 + x * y)
    return disc, gen


def integrate(order, lrs, rounds):
    """`rounds` Runge-Kutta steps, each completed by ganpatch's SGD (one optimizer per player)."""
    disc, gen = linear_players()
    rk = runge_kutta.RungeKutta(drift.DriftRegularizer(disc, gen), order)
    optimizers = {name: optim.build_optimizer('sgd', player.params, lr=lrs[name])
                  for name, player in rk.regularizer.players.items()}
    for _ in range(rounds):
        for opt in optimizers.values():
            opt.zero_grad()
        rk.backward(lrs)
        for opt in optimizers.values():
            opt.step()
    return np.array([disc.params[0].item(), gen.params[0].item()])


def exact(rates, time):
    a = np.array([[-EPS, 1.0], [-1.0, -EPS]]) * np.asarray(rates)[:, None]
    return scipy.linalg.expm(a * time) @ np.array(START)


@pytest.mark.parametrize('order, low, high', [(1, 1.7, 2.3), (2, 3.4, 4.6), (4, 13.0, 19.0)])
@pytest.mark.parametrize('lrs', [(0.2, 0.2), (0.2, 0.1)])
def test_error_order_against_the_exact_flow(order, low, high, lrs):
    """Halving the step divides the error at a fixed time by ~2^order (x at t: rates (lr_disc, lr_gen) per round)."""
    errors = []
    for scale in (1, 0.5):
        step = {'disc': lrs[0] * scale, 'gen': lrs[1] * scale}
        rounds = int(round(HORIZON / scale))
        errors.append(np.linalg.norm(integrate(order, step, rounds) - exact((step['disc'], step['gen']), rounds)))
    assert low < errors[0] / errors[1] < high, errors


def test_rk4_is_far_closer_to_the_flow_than_gradient_descent():
    lrs = {'disc': 0.2, 'gen': 0.2}
    reference = exact((0.2, 0.2), 20)
    euler, rk4 = (np.linalg.norm(integrate(order, lrs, 20) - reference) for order in (1, 4))
    assert rk4 < 1e-3 * euler, (rk4, euler)


def test_stages_use_fresh_minibatches_and_leave_the_parameters_in_place():
    disc, gen = linear_players()
    draws = []
    for name, player in [('disc', disc), ('gen', gen)]:
        player.sample = lambda name=name: draws.append(name)
    rk = runge_kutta.RungeKutta(drift.DriftRegularizer(disc, gen), 4)
    losses = rk.backward({'disc': 0.2, 'gen': 0.2})
    assert sorted(draws) == ['disc'] * 4 + ['gen'] * 4
    assert [disc.params[0].item(), gen.params[0].item()] == list(START)
    assert float(losses['disc']) == pytest.approx(EPS * 0.08 ** 2 / 2 + 0.08 * 0.05) # At the first stage.
    assert disc.params[0].grad is not None and gen.params[0].grad is not None


def test_order_one_is_plain_gradient_descent():
    disc, gen = linear_players()
    runge_kutta.RungeKutta(drift.DriftRegularizer(disc, gen), 1).backward({'disc': 0.2, 'gen': 0.2})
    x, y = START
    assert float(disc.params[0].grad) == pytest.approx(EPS * x - y)
    assert float(gen.params[0].grad) == pytest.approx(EPS * y + x)


def test_norm_clipping_clips_the_combined_direction():
    disc, gen = linear_players()
    rk = runge_kutta.RungeKutta(drift.DriftRegularizer(disc, gen), 4)
    rk.backward({'disc': 0.2, 'gen': 0.2})
    direction = float(disc.params[0].grad)
    opt = optim.build_optimizer('sgd', disc.params, lr=0.2, clip_mode='norm', clip_threshold=1e-3)
    opt.step()
    assert disc.params[0].item() == pytest.approx(START[0] - 0.2 * 1e-3 * math.copysign(1, direction))


def test_clipping_applies_after_the_drift_regularizer_gradient():
    """D of the Dirac-GAN: the clipped step follows the total gradient (loss + cancel-interaction term)."""
    psi = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    theta = torch.nn.Parameter(torch.tensor(-0.8, dtype=torch.float64))
    disc = drift.Player([psi], lambda batch: torch.nn.functional.softplus(psi * theta))
    gen = drift.Player([theta], lambda batch: -torch.nn.functional.softplus(psi * theta))
    coeffs = drift.preset_coefficients('cancel-interaction', lr_disc=20.0, lr_gen=20.0) # other_dot_prod: -10.
    regularizer = drift.DriftRegularizer(disc, gen, coeffs)
    s = 1 / (1 + math.exp(0.4))
    loss_grad = s * -0.8
    regularizer_grad = -10 * -(0.5 * s ** 2 + 0.5 ** 2 * -0.8 * s * s * (1 - s)) # Coefficient x closed form.
    assert np.sign(loss_grad) != np.sign(loss_grad + regularizer_grad) # The clip sees the sum, not the loss alone.
    opt = optim.build_optimizer('sgd', disc.params, lr=0.1, clip_mode='norm', clip_threshold=1e-2)
    regularizer.backward('disc')
    assert float(psi.grad) == pytest.approx(loss_grad + regularizer_grad, rel=1e-12)
    opt.step()
    assert psi.item() == pytest.approx(0.5 - 0.1 * 1e-2 * np.sign(loss_grad + regularizer_grad), rel=1e-9) # Norm in float32.


@pytest.mark.parametrize('kwargs, message', [
    (dict(order=3), 'Unknown Runge-Kutta order 3; expected one of 1, 2, 4'),
    (dict(order=4, update='alternating'), "they need simultaneous updates, got 'alternating'"),
    (dict(order=4, optimizers=('sgd', 'extrasgd')), "cannot drive the extragradient optimizer 'extrasgd'"),
    (dict(order=2, optimizers=('extraadam', 'sgd')), "'extraadam'"),
    (dict(order=4, preset='cancel-interaction'), "Runge-Kutta of order 4 has no first-order drift to cancel"),
    (dict(order=2, preset='cancel-interaction-strengthen-self'), 'has no first-order drift'),
])
def test_check_setup_rejects_bad_combinations(kwargs, message):
    with pytest.raises(ValueError) as error:
        runge_kutta.check_setup(**kwargs)
    assert message in str(error.value)


def test_check_setup_accepts_explicit_regularizers_and_order_one():
    runge_kutta.check_setup(4, preset='co', optimizers=('sgd', 'adam'))
    runge_kutta.check_setup(1, preset='cancel-interaction')


def test_extragradient_names_match_the_optimizers():
    params = [torch.nn.Parameter(torch.zeros(1))]
    names = {name for name in optim.OPTIMIZERS if optim.is_extragradient(optim.build_optimizer(name, params, lr=0.1))}
    assert names == set(drift.EXTRAGRADIENT_OPTIMIZERS)


def test_step_sizes_must_name_both_players():
    rk = runge_kutta.RungeKutta(drift.DriftRegularizer(*linear_players()), 2)
    with pytest.raises(ValueError, match='step_sizes must have exactly the players'):
        rk.backward({'disc': 0.1})
