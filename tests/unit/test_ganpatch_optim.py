"""ganpatch.optim: the factory, clipped SGD and Adam (hand values, torch.optim parity, state, NaN policy),
and clipped SGDA under heavy-tailed noise."""

import copy
import math

import numpy as np
import pytest
import torch

from ganpatch.optim import OPTIMIZERS, ClippedAdam, ClippedSGD, ExtraAdam, ExtraSGD, build_optimizer, is_extragradient

A = torch.tensor([3.0, 4.0]) # Tiny quadratic f(x) = 1/2 sum(A x^2), gradient A x; at x = (1, 1): g = (3, 4), |g| = 5.


def quadratic_param():
    return torch.nn.Parameter(torch.ones(2))


def set_quadratic_grad(param):
    param.grad = A * param.detach()


def random_model(seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(4, 3), (3,), (2, 5)]]


def set_random_grads(params, step, nan=False):
    generator = torch.Generator().manual_seed(1000 + step)
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator) * 2
    if nan:
        params[1].grad[0] = math.nan


def test_factory_builds_each_optimizer():
    expected = dict(adam=ClippedAdam, sgd=ClippedSGD, extrasgd=ExtraSGD, extraadam=ExtraAdam)
    assert set(OPTIMIZERS) == set(expected)
    for name, cls in expected.items():
        opt = build_optimizer(name, [quadratic_param()], lr=0.1, clip_mode='norm', clip_threshold=1.0)
        assert type(opt) is cls and isinstance(opt, torch.optim.Optimizer)
        assert is_extragradient(opt) == name.startswith('extra')
        assert (opt.clip_mode, opt.clip_threshold, opt.skipped_steps, opt.last_grad_norm) == ('norm', 1.0, 0, None)
    assert not is_extragradient(torch.optim.SGD([quadratic_param()], lr=0.1))


def test_factory_passes_hyperparameters_through():
    opt = build_optimizer('adam', [quadratic_param()], lr=0.002, betas=[0, 0.99], eps=1e-6, weight_decay=0.1)
    assert opt.param_groups[0]['betas'] == (0.0, 0.99) and opt.param_groups[0]['eps'] == 1e-6
    opt = build_optimizer('sgd', [quadratic_param()], lr=0.3, momentum=0.9)
    assert opt.param_groups[0]['momentum'] == 0.9 and opt.param_groups[0]['lr'] == 0.3
    assert build_optimizer('sgd', [quadratic_param()], lr=0.3).param_groups[0]['momentum'] == 0.0


@pytest.mark.parametrize('kwargs, message', [
    (dict(name='rmsprop'), 'Unknown optimizer'),
    (dict(name='sgd', clip_mode='l2', clip_threshold=1.0), 'Unknown clip mode'),
    (dict(name='sgd', clip_mode='norm'), 'needs a clip threshold'),
    (dict(name='adam', clip_mode='value', clip_threshold=0), 'must be a finite number > 0'),
    (dict(name='extrasgd', clip_mode='norm', clip_threshold=-2.0), 'must be a finite number > 0'),
    (dict(name='adam', momentum=0.9), 'momentum applies to sgd'),
    (dict(name='adam', betas=(0.9, 1.0)), 'Invalid betas'),
    (dict(name='sgd', lr=-1.0), 'Invalid lr'),
])
def test_factory_rejects_bad_arguments(kwargs, message):
    kwargs = dict(dict(lr=0.1), **kwargs)
    with pytest.raises(ValueError, match=message):
        build_optimizer(kwargs.pop('name'), [quadratic_param()], **kwargs)


@pytest.mark.parametrize('clip_mode, threshold, expected', [
    ('none', None, [1 - 0.1 * 3, 1 - 0.1 * 4]),
    ('norm', 1.0, [1 - 0.1 * 3 / 5, 1 - 0.1 * 4 / 5]),  # min(1, 1/5) g
    ('norm', 10.0, [1 - 0.1 * 3, 1 - 0.1 * 4]),        # below the threshold: unchanged
    ('value', 3.5, [1 - 0.1 * 3, 1 - 0.1 * 3.5]),      # clamp to [-3.5, 3.5]
])
def test_sgd_hand_computed_step(clip_mode, threshold, expected):
    param = quadratic_param()
    opt = build_optimizer('sgd', [param], lr=0.1, clip_mode=clip_mode, clip_threshold=threshold)
    set_quadratic_grad(param)
    opt.step()
    assert param.tolist() == pytest.approx(expected, rel=1e-6)
    assert float(opt.last_grad_norm) == pytest.approx(5.0)


def reference_adam(x, grads, lr, beta1, beta2, eps):
    """Adam (Kingma & Ba 2015, Alg. 1) on plain floats, one coordinate."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        x -= lr * (m / (1 - beta1 ** t)) / (math.sqrt(v / (1 - beta2 ** t)) + eps)
    return x


@pytest.mark.parametrize('clip_mode, threshold', [('none', None), ('norm', 2.0), ('value', 1.0)])
def test_adam_hand_computed_steps(clip_mode, threshold):
    param = quadratic_param()
    opt = build_optimizer('adam', [param], lr=0.1, betas=(0.5, 0.9), eps=1e-3, clip_mode=clip_mode, clip_threshold=threshold)
    x, history = [1.0, 1.0], [[], []]
    for _ in range(3):
        g = [3 * x[0], 4 * x[1]]
        if clip_mode == 'norm':
            g = [gi * min(1, threshold / math.hypot(*g)) for gi in g]
        if clip_mode == 'value':
            g = [max(-threshold, min(threshold, gi)) for gi in g]
        for i in range(2):
            history[i].append(g[i])
        x = [reference_adam(1.0, history[i], 0.1, 0.5, 0.9, 1e-3) for i in range(2)]
        set_quadratic_grad(param)
        opt.step()
        assert param.tolist() == pytest.approx(x, rel=1e-5)


def test_adam_is_bit_identical_to_torch_adam_without_clipping():
    ours, theirs = random_model(0), random_model(0)
    groups = lambda params: [dict(params=params[:2]), dict(params=params[2:], lr=0.05, weight_decay=0.01)]
    opt = build_optimizer('adam', groups(ours), lr=0.01, betas=(0.0, 0.99), eps=1e-8)
    ref = torch.optim.Adam(groups(theirs), lr=0.01, betas=(0.0, 0.99), eps=1e-8, foreach=True)
    default = random_model(0)
    ref_default = torch.optim.Adam(groups(default), lr=0.01, betas=(0.0, 0.99), eps=1e-8) # Per-tensor on CPU.
    for step in range(5):
        for params, optimizer in [(ours, opt), (theirs, ref), (default, ref_default)]:
            set_random_grads(params, step)
            optimizer.step()
        for a, b, c in zip(ours, theirs, default):
            assert torch.equal(a, b)
            torch.testing.assert_close(a, c)
    for key in ['exp_avg', 'exp_avg_sq', 'step']:
        assert torch.equal(opt.state[ours[0]][key], ref.state[theirs[0]][key])


def test_sgd_with_momentum_and_weight_decay_is_bit_identical_to_torch_sgd():
    ours, theirs = random_model(1), random_model(1)
    opt = build_optimizer('sgd', ours, lr=0.05, momentum=0.9, weight_decay=0.01)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=True)
    for step in range(4):
        for params, optimizer in [(ours, opt), (theirs, ref)]:
            set_random_grads(params, step)
            optimizer.step()
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize('name', ['sgd', 'adam'])
@pytest.mark.parametrize('clip_mode', ['norm', 'value'])
def test_clipped_step_equals_torch_clip_then_torch_step(name, clip_mode):
    ours, theirs = random_model(2), random_model(2)
    threshold = 0.5
    kwargs = dict(momentum=0.5) if name == 'sgd' else dict(betas=(0.8, 0.99))
    opt = build_optimizer(name, ours, lr=0.05, clip_mode=clip_mode, clip_threshold=threshold, **kwargs)
    ref = (torch.optim.SGD if name == 'sgd' else torch.optim.Adam)(theirs, lr=0.05, foreach=True, **kwargs)
    for step in range(3):
        set_random_grads(ours, step)
        set_random_grads(theirs, step)
        raw = [param.grad.clone() for param in ours]
        if clip_mode == 'norm':
            torch.nn.utils.clip_grad_norm_(theirs, threshold, foreach=True)
        else:
            torch.nn.utils.clip_grad_value_(theirs, threshold, foreach=True)
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if clip_mode == 'norm': # The clip is folded into the update: .grad keeps the raw gradient.
        assert all(torch.equal(param.grad, grad) for param, grad in zip(ours, raw))


def test_one_norm_over_all_param_groups():
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer('sgd', [dict(params=[first]), dict(params=[second], lr=1.0)], lr=0.5, clip_mode='norm', clip_threshold=1.0)
    first.grad, second.grad = torch.tensor([3.0]), torch.tensor([4.0])
    opt.step()
    assert float(opt.last_grad_norm) == pytest.approx(5.0) # One player: the norm spans both groups.
    assert first.item() == pytest.approx(-0.5 * 0.6) and second.item() == pytest.approx(-1.0 * 0.8)


def test_parameters_without_gradients_do_not_move():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    for name in ['sgd', 'adam']:
        opt = build_optimizer(name, [used, unused], lr=0.1, clip_mode='norm', clip_threshold=1.0)
        used.grad = torch.ones(2)
        opt.step()
        assert unused.tolist() == [1.0, 1.0, 1.0] and unused not in opt.state or len(opt.state[unused]) == 0


@pytest.mark.parametrize('name', ['sgd', 'adam'])
def test_state_dict_round_trip_continues_identically(name):
    params = random_model(3)
    kwargs = dict(momentum=0.9) if name == 'sgd' else {}
    opt = build_optimizer(name, params, lr=0.01, clip_mode='norm', clip_threshold=1.0, **kwargs)
    for step in range(3):
        set_random_grads(params, step)
        opt.step()
    saved_params, saved_state = copy.deepcopy(params), copy.deepcopy(opt.state_dict())
    resumed = build_optimizer(name, saved_params, lr=0.01, clip_mode='norm', clip_threshold=1.0, **kwargs)
    resumed.load_state_dict(saved_state)
    for step in range(3, 6):
        for ps, optimizer in [(params, opt), (saved_params, resumed)]:
            set_random_grads(ps, step)
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(params, saved_params))


@pytest.mark.parametrize('name', ['sgd', 'adam'])
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_nonfinite_gradient_skips_the_step(name, bad):
    params = random_model(4)
    opt = build_optimizer(name, params, lr=0.1, clip_mode='value', clip_threshold=1.0, **(dict(momentum=0.9) if name == 'sgd' else {}))
    set_random_grads(params, 0)
    opt.step()
    before_params, before_state = copy.deepcopy(params), copy.deepcopy(opt.state_dict())
    set_random_grads(params, 1)
    params[2].grad[1, 1] = bad
    opt.step()
    assert opt.skipped_steps == 1 and not math.isfinite(float(opt.last_grad_norm))
    assert all(torch.equal(a, b) for a, b in zip(params, before_params))
    after_state = opt.state_dict()['state']
    for index, state in before_state['state'].items():
        assert all(torch.equal(value, after_state[index][key]) for key, value in state.items())
    set_random_grads(params, 2)
    opt.step() # A finite gradient steps again.
    assert opt.skipped_steps == 1 and not torch.equal(params[0], before_params[0])


def test_clipped_sgda_tames_heavy_tailed_noise():
    """Strongly monotone game f(x, y) = mu/2 |x|^2 + x^T B y - mu/2 |y|^2 (solution 0) with Student-t noise
    (df = 1.5: infinite variance). Over 40 seeded runs of 60 simultaneous steps, the 99th percentile of the
    distance to the solution (over runs and the iterates after a burn-in of 20 steps) is far lower for clipped
    SGDA (norm, lambda = 2) than for SGDA (the effect Gorbunov et al. 2022 report)."""
    runs, steps, burn_in, dim, mu, lr = 40, 60, 20, 4, 0.5, 0.1
    rng = np.random.default_rng(0)
    B = torch.tensor(rng.standard_normal((dim, dim)) / math.sqrt(dim), dtype=torch.float32)
    noise = torch.tensor(rng.standard_t(1.5, size=(runs, steps, 2, dim)), dtype=torch.float32)
    start = torch.tensor(rng.standard_normal((runs, 2, dim)), dtype=torch.float32)

    def errors(clip_mode, threshold):
        distances = []
        for run in range(runs):
            x, y = (torch.nn.Parameter(start[run, i].clone()) for i in range(2))
            opts = [build_optimizer('sgd', [p], lr=lr, clip_mode=clip_mode, clip_threshold=threshold) for p in (x, y)]
            for step in range(steps):
                x.grad = mu * x.detach() + B @ y.detach() + noise[run, step, 0]
                y.grad = mu * y.detach() - B.T @ x.detach() + noise[run, step, 1] # y ascends f.
                for opt in opts:
                    opt.step()
                if step >= burn_in:
                    distances.append(math.sqrt(float(x.detach().square().sum() + y.detach().square().sum())))
        return np.array(distances)

    sgda, clipped = errors('none', None), errors('norm', 2.0)
    p99_sgda, p99_clipped = np.percentile(sgda, 99), np.percentile(clipped, 99)
    print(f'p99 distance to the solution: SGDA {p99_sgda:.3g}, clipped SGDA {p99_clipped:.3g}; medians {np.median(sgda):.3g}, {np.median(clipped):.3g}')
    assert p99_clipped < 0.2 * p99_sgda
    assert np.median(clipped) < 0.5 * np.median(sgda) # And the typical iterate is closer too.
