"""ganpatch.optim: the factory, clipped SGD and Adam (hand values, torch.optim parity, state, NaN policy),
and clipped SGDA under heavy-tailed noise."""

import copy
import math

import numpy as np
import pytest
import torch

from ganpatch.optim import (ALIASES, OPTIMIZER_CHOICES, OPTIMIZERS, ACClip, ClippedAdam, ClippedSGD, ExtraAdam, ExtraSGD, NormalizedSGD,
                            OptimisticAdam, build_optimizer, canonical_name, default_hyperparameters, describe_choices,
                            is_extragradient, takes_adam_hyperparameters)

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
    expected = dict(adam=ClippedAdam, sgd=ClippedSGD, extrasgd=ExtraSGD, extraadam=ExtraAdam, norm_sgd=NormalizedSGD,
                    optimistic_adam=OptimisticAdam, acclip=ACClip, paper_acclip=ACClip, nomom_acclip=ACClip,
                    nomom_paper_acclip=ACClip, extra_sgd=ExtraSGD, extra_adam=ExtraAdam)
    assert set(OPTIMIZER_CHOICES) == set(expected) and set(OPTIMIZERS) == set(expected) - set(ALIASES)
    for name, cls in expected.items():
        opt = build_optimizer(name, [quadratic_param()], lr=0.1, clip_mode='norm', clip_threshold=1.0)
        assert type(opt) is cls and isinstance(opt, torch.optim.Optimizer)
        assert is_extragradient(opt) == name.startswith('extra')
        assert (opt.clip_mode, opt.clip_threshold, opt.skipped_steps, opt.last_grad_norm) == ('norm', 1.0, 0, None)
        assert (opt.clip_norm_type, opt.clip_norm_eps) == (2.0, 0.0)
    assert not is_extragradient(torch.optim.SGD([quadratic_param()], lr=0.1))


def test_aliases_resolve_to_the_canonical_names():
    assert ALIASES == {'extra_sgd': 'extrasgd', 'extra_adam': 'extraadam'} # The authors' StyleGAN spellings.
    assert [canonical_name(name) for name in ['extra_sgd', 'extra_adam', 'sgd', 'acclip']] == ['extrasgd', 'extraadam', 'sgd', 'acclip']
    assert default_hyperparameters('extra_adam') == default_hyperparameters('extraadam')
    with pytest.raises(ValueError, match=r"Unknown optimizer 'extra-sgd'; expected one of adam, sgd, extrasgd \(alias extra_sgd\)"):
        canonical_name('extra-sgd')
    text = describe_choices() # For help texts: every optimizer once, aliases in brackets.
    entries = text.split(', ')
    assert [entry.split(' ')[0] for entry in entries] == list(OPTIMIZERS)
    assert [entry for entry in entries if ' ' in entry] == ['extrasgd (alias extra_sgd)', 'extraadam (alias extra_adam)']
    first, second = random_model(5), random_model(5)
    for params, name in [(first, 'extra_sgd'), (second, 'extrasgd')]: # Same optimizer, same numbers.
        opt = build_optimizer(name, params, lr=0.1, clip_mode='norm', clip_threshold=1.0)
        for step in range(2):
            set_random_grads(params, step)
            (opt.extrapolate if step == 0 else opt.step)()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_sgd_family_ignores_adam_hyperparameters_and_all_accept_zero_momentum():
    """Callers written for the first four optimizers pass Adam's betas (and eps) whatever the optimizer."""
    for name in ['sgd', 'extrasgd', 'norm_sgd']:
        group = build_optimizer(name, [quadratic_param()], lr=0.1, betas=(0.0, 0.99)).param_groups[0]
        assert 'betas' not in group
    assert 'eps' not in build_optimizer('extrasgd', [quadratic_param()], lr=0.1, eps=1e-8).param_groups[0]
    assert build_optimizer('norm_sgd', [quadratic_param()], lr=0.1, eps=1e-6).eps == 1e-6
    for name in OPTIMIZERS:
        build_optimizer(name, [quadratic_param()], lr=0.1, momentum=0)


def test_default_hyperparameters_are_the_constructor_defaults_and_the_variants():
    assert default_hyperparameters('sgd') == dict(momentum=0.0, weight_decay=0.0)
    assert default_hyperparameters('adam') == dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    assert default_hyperparameters('extraadam') == default_hyperparameters('adam') == default_hyperparameters('optimistic_adam')
    assert default_hyperparameters('norm_sgd') == dict(momentum=0.0, weight_decay=0.0, eps=1e-8)
    assert default_hyperparameters('acclip') == dict(betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-5, alpha=2.0, second_moment=True)
    opt = build_optimizer('nomom_paper_acclip', [quadratic_param()], lr=0.1, alpha=1.5)
    assert {key: opt.param_groups[0][key] for key in ['betas', 'eps', 'weight_decay', 'alpha', 'second_moment']} == \
        dict(betas=(0.0, 0.99), eps=1e-5, weight_decay=1e-5, alpha=1.5, second_moment=False)


def test_upstream_adam_settings_reach_the_adam_family_only():
    family = {name for name in OPTIMIZER_CHOICES if takes_adam_hyperparameters(name)}
    assert family == {'adam', 'extraadam', 'extra_adam', 'optimistic_adam'}
    with pytest.raises(ValueError, match='Unknown optimizer'):
        takes_adam_hyperparameters('rmsprop')
    upstream = dict(betas=(0.0, 0.99), eps=1e-6)
    assert build_optimizer('adam', [quadratic_param()], lr=0.1, upstream_adam=upstream).param_groups[0]['betas'] == (0.0, 0.99)
    acclip = build_optimizer('acclip', [quadratic_param()], lr=0.1, upstream_adam=upstream).param_groups[0]
    assert (acclip['betas'], acclip['eps']) == (default_hyperparameters('acclip')['betas'], 1e-5)
    sgd = build_optimizer('sgd', [quadratic_param()], lr=0.1, upstream_adam=upstream).param_groups[0]
    assert 'betas' not in sgd and 'eps' not in sgd
    explicit = build_optimizer('extraadam', [quadratic_param()], lr=0.1, upstream_adam=upstream, eps=1e-3)
    assert explicit.param_groups[0]['eps'] == 1e-3


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
    (dict(name='norm_sgd', alpha=1.0), 'alpha applies to acclip, .*; norm_sgd takes momentum, weight_decay, eps'),
    (dict(name='acclip', momentum=0.5), 'momentum applies to sgd, extrasgd, norm_sgd; acclip takes betas, eps'),
    (dict(name='adam', nesterov=True), 'nesterov is not a hyperparameter of any optimizer; adam takes betas'),
    (dict(name='paper_acclip', alpha=2.5), 'Invalid alpha'),
    (dict(name='optimistic_adam', eps=-1.0), 'Invalid eps'),
    (dict(name='sgd', clip_norm_type=float('inf')), "norm type or norm eps applies to clip mode 'norm', not 'none'"),
    (dict(name='sgd', clip_mode='value', clip_threshold=1.0, clip_norm_eps=1e-6), "applies to clip mode 'norm', not 'value'"),
    (dict(name='sgd', clip_mode='norm', clip_threshold=1.0, clip_norm_type=0.5), 'norm type must be a number >= 1 or inf'),
    (dict(name='sgd', clip_mode='norm', clip_threshold=1.0, clip_norm_eps=-1e-6), 'norm eps must be a finite number >= 0'),
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


STEPPED_OPTIMIZERS = ['sgd', 'adam', 'norm_sgd', 'optimistic_adam', 'acclip', 'paper_acclip'] # One step() per iteration.


@pytest.mark.parametrize('name', STEPPED_OPTIMIZERS)
def test_state_dict_round_trip_continues_identically(name):
    params = random_model(3)
    kwargs = dict(momentum=0.9) if name.endswith('sgd') else {}
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


@pytest.mark.parametrize('name', STEPPED_OPTIMIZERS)
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_nonfinite_gradient_skips_the_step(name, bad):
    params = random_model(4)
    opt = build_optimizer(name, params, lr=0.1, clip_mode='value', clip_threshold=1.0, **(dict(momentum=0.9) if name.endswith('sgd') else {}))
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


# clip_norm_type and clip_norm_eps.

@pytest.mark.parametrize('norm_type', [2.0, math.inf, 3.0, 'inf'])
@pytest.mark.parametrize('name, kwargs, reference', [
    ('sgd', {}, lambda params: torch.optim.SGD(params, lr=0.05)),                            # torch's defaults
    ('sgd', dict(momentum=0.9, weight_decay=0.01), lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01)),
    ('adam', dict(betas=(0.0, 0.99)), lambda params: torch.optim.Adam(params, lr=0.05, betas=(0.0, 0.99), foreach=True)),
])
def test_clip_norm_eps_reproduces_clip_grad_norm_then_the_torch_step_bit_for_bit(norm_type, name, kwargs, reference):
    """clip_norm_eps=1e-6: min(1, c / (||g|| + 1e-6)) rescales .grad as torch.nn.utils.clip_grad_norm_ does (the
    clipped-methods authors' code calls it before every step), so their runs are reproduced exactly."""
    ours, theirs = random_model(6), random_model(6)
    threshold = 0.5 if norm_type in (2.0, 3.0) else 0.05
    opt = build_optimizer(name, ours, lr=0.05, clip_mode='norm', clip_threshold=threshold, clip_norm_type=norm_type,
                          clip_norm_eps=1e-6, **kwargs)
    ref = reference(theirs)
    for step in range(4):
        for params in (ours, theirs):
            set_random_grads(params, step)
            if step == 3: # Below the threshold: no clipping at all.
                for param in params:
                    param.grad.mul_(1e-4)
        their_norm = torch.nn.utils.clip_grad_norm_(theirs, threshold, norm_type=norm_type)
        opt.step()
        ref.step()
        assert torch.equal(opt.last_grad_norm, their_norm)
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs)) # .grad rescaled in place, as theirs.
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), f'step {step}'
    assert their_norm < threshold


def test_default_norm_clip_differs_from_clip_grad_norm_only_by_rounding():
    """Without clip_norm_eps the factor is min(1, c/||g||) folded into the step: no longer bit-identical to
    clip_grad_norm_ + SGD, but within float32 rounding, and .grad keeps the raw gradient."""
    generator = torch.Generator().manual_seed(7)
    weights, grad = torch.randn(64, 64, generator=generator), torch.randn(64, 64, generator=generator)
    ours, theirs = [torch.nn.Parameter(weights.clone())], [torch.nn.Parameter(weights.clone())]
    opt = build_optimizer('sgd', ours, lr=0.05, clip_mode='norm', clip_threshold=0.5)
    ref = torch.optim.SGD(theirs, lr=0.05)
    ours[0].grad, theirs[0].grad = grad.clone(), grad.clone()
    torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    opt.step()
    ref.step()
    assert not torch.equal(ours[0], theirs[0])
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-7)
    assert torch.equal(ours[0].grad, grad)


@pytest.mark.parametrize('norm_type, expected_norm', [(1.0, 7.0), (math.inf, 4.0), (3.0, 91 ** (1 / 3))])
def test_clip_norm_type_hand_computed_sgd_step(norm_type, expected_norm):
    param = quadratic_param()
    opt = build_optimizer('sgd', [param], lr=0.1, clip_mode='norm', clip_threshold=2.0, clip_norm_type=norm_type)
    set_quadratic_grad(param) # g = (3, 4): ||g||_1 = 7, ||g||_inf = 4, ||g||_3 = 91^(1/3).
    opt.step()
    assert float(opt.last_grad_norm) == pytest.approx(expected_norm, rel=1e-6)
    assert param.tolist() == pytest.approx([1 - 0.1 * 3 * 2 / expected_norm, 1 - 0.1 * 4 * 2 / expected_norm], rel=1e-6)


@pytest.mark.parametrize('name', ['sgd', 'extrasgd', 'norm_sgd', 'acclip'])
def test_clip_options_survive_deepcopy_and_old_pickles_load_with_the_defaults(name):
    opt = build_optimizer(name, random_model(8), lr=0.1, clip_mode='norm', clip_threshold=1.0, clip_norm_type='inf', clip_norm_eps=1e-6)
    copied = copy.deepcopy(opt)
    assert (copied.clip_norm_type, copied.clip_norm_eps) == (math.inf, 1e-6)
    state = opt.__getstate__() # A pickle written before the two options existed lacks them.
    del state['clip_norm_type'], state['clip_norm_eps']
    old = type(opt).__new__(type(opt))
    old.__setstate__(state)
    assert (old.clip_mode, old.clip_threshold, old.clip_norm_type, old.clip_norm_eps) == ('norm', 1.0, 2.0, 0.0)


# norm_sgd: normalized SGD.

def test_norm_sgd_hand_computed_steps():
    """x <- x - lr g / sqrt(1e-8 + ||g||^2) with one norm over the whole network (both tensors here); the eps sits
    inside the square root, which a gradient of norm 5e-4 shows (sqrt(2.6e-7) = 5.10e-4, not 5e-4 + eps)."""
    first, second = torch.nn.Parameter(torch.tensor([1.0, 1.0])), torch.nn.Parameter(torch.tensor([2.0]))
    opt = build_optimizer('norm_sgd', [first, second], lr=0.1)
    for scale in [1.0, 1e-4]:
        before = first.tolist() + second.tolist()
        first.grad, second.grad = torch.tensor([3.0, 0.0]) * scale, torch.tensor([4.0]) * scale
        opt.step()
        denom = math.sqrt(1e-8 + (25 * scale * scale))
        expected = [before[0] - 0.1 * 3 * scale / denom, before[1], before[2] - 0.1 * 4 * scale / denom]
        assert first.tolist() + second.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)
    step = before[2] - second.item() # 0.0784; ||g|| + eps in the denominator would give 0.08.
    assert step == pytest.approx(0.1 * 4e-4 / math.sqrt(1e-8 + 2.5e-7), rel=1e-4)
    assert step != pytest.approx(0.1 * 4e-4 / (5e-4 + 1e-8), rel=1e-2)
    first.grad, second.grad = torch.zeros(2), torch.zeros(1)
    before = first.tolist() + second.tolist()
    opt.step() # A zero gradient does not move.
    assert first.tolist() + second.tolist() == before


def test_norm_sgd_with_momentum_and_clipping_hand_computed():
    param = quadratic_param()
    opt = build_optimizer('norm_sgd', [param], lr=0.1, momentum=0.5, clip_mode='value', clip_threshold=3.5)
    x, buf = [1.0, 1.0], None
    for _ in range(3):
        g = [max(-3.5, min(3.5, gi)) for gi in [3 * x[0], 4 * x[1]]] # Clamped, then normalized.
        d = [gi / math.sqrt(1e-8 + g[0] ** 2 + g[1] ** 2) for gi in g]
        buf = d if buf is None else [0.5 * b + di for b, di in zip(buf, d)]
        x = [xi - 0.1 * b for xi, b in zip(x, buf)]
        set_quadratic_grad(param)
        opt.step()
        assert param.tolist() == pytest.approx(x, rel=1e-6)
    norm_clipped = build_optimizer('norm_sgd', [p := quadratic_param()], lr=0.1, clip_mode='norm', clip_threshold=0.01)
    set_quadratic_grad(p)
    norm_clipped.step() # The norm clip only rescales g; normalizing undoes it.
    assert p.tolist() == pytest.approx([1 - 0.1 * 0.6, 1 - 0.1 * 0.8], rel=1e-5)


def test_norm_sgd_matches_the_authors_arithmetic():
    """Their NormalizedSGD (one param group per network): .grad /= sqrt(1e-8 + sum of g^2), then torch SGD."""
    ours, theirs = random_model(9), random_model(9)
    opt = build_optimizer('norm_sgd', ours, lr=0.05, momentum=0.9, weight_decay=1e-3)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, weight_decay=1e-3)
    for step in range(4):
        set_random_grads(ours, step)
        set_random_grads(theirs, step)
        norm = torch.tensor(1e-8)
        for param in theirs:
            norm += (param.grad ** 2).sum()
        for param in theirs:
            param.grad /= norm.sqrt()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# optimistic_adam: Optimistic Adam (Daskalakis et al., ICLR 2018).

def test_optimistic_adam_hand_computed_steps():
    """x_t = x_{t-1} - 2 lr d_t + lr d_{t-1}, d_t = m_hat_t / (sqrt(v_hat_t) + eps), d_0 = 0 (Algorithm 1)."""
    param = quadratic_param()
    opt = build_optimizer('optimistic_adam', [param], lr=0.1, betas=(0.5, 0.9), eps=1e-3, clip_mode='norm', clip_threshold=2.0)
    x, m, v, d = [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    for t in range(1, 4):
        g = [3 * x[0], 4 * x[1]]
        g = [gi * min(1, 2.0 / math.hypot(*g)) for gi in g]
        m = [0.5 * mi + 0.5 * gi for mi, gi in zip(m, g)]
        v = [0.9 * vi + 0.1 * gi * gi for vi, gi in zip(v, g)]
        new_d = [(mi / (1 - 0.5 ** t)) / (math.sqrt(vi / (1 - 0.9 ** t)) + 1e-3) for mi, vi in zip(m, v)]
        x = [xi - 2 * 0.1 * di + 0.1 * old for xi, di, old in zip(x, new_d, d)]
        d = new_d
        set_quadratic_grad(param)
        opt.step()
        assert param.tolist() == pytest.approx(x, rel=1e-5)
    assert t == 3 and float(opt.state[param]['step']) == 3
    assert opt.state[param]['previous_direction'].tolist() == pytest.approx(d, rel=1e-5)


def test_optimistic_adam_first_step_is_twice_adams():
    ours, theirs = random_model(10), random_model(10)
    opt = build_optimizer('optimistic_adam', ours, lr=0.01, betas=(0.0, 0.99))
    ref = torch.optim.Adam(theirs, lr=0.02, betas=(0.0, 0.99))
    for params, optimizer in [(ours, opt), (theirs, ref)]:
        set_random_grads(params, 0)
        optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_optimistic_adam_converges_on_a_bilinear_game_where_gda_and_adam_do_not():
    """min_x max_y x^T B y (B seeded 3x3; the solution is 0), simultaneous play from x = y = 1, lr 0.04, StyleGAN's
    betas (0, 0.99), 1000 steps: GDA spirals out, Adam circles far from the solution, Optimistic Adam settles
    within a few lr of it (its steps keep a length ~lr, so it cannot land exactly). One optimizer holds both
    players: without clipping, these per-coordinate rules move each player as its own optimizer would."""
    B = torch.tensor(np.random.default_rng(0).standard_normal((3, 3)) / math.sqrt(3), dtype=torch.float32)

    def distances(name):
        x, y = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
        opt = build_optimizer(name, [x, y], lr=0.04, **({} if name == 'sgd' else dict(betas=(0.0, 0.99))))
        result = []
        for _ in range(1000):
            x.grad, y.grad = B @ y.detach(), -B.T @ x.detach() # y ascends x^T B y.
            opt.step()
            result.append(math.sqrt(float(x.detach().square().sum() + y.detach().square().sum())))
        return np.array(result)

    start = math.sqrt(6)
    gda, adam, optimistic = distances('sgd'), distances('adam'), distances('optimistic_adam')
    print(f'distance to the solution after 1000 steps (start {start:.3g}): GDA {gda[-1]:.3g}, Adam {adam[-1]:.3g} '
          f'(last 100 steps >= {adam[-100:].min():.3g}), Optimistic Adam {optimistic[-1]:.3g} (<= {optimistic[-100:].max():.3g})')
    assert gda[-1] > 1.3 * start and np.all(np.diff(gda[-100:]) > 0)
    assert adam[-100:].min() > 0.6 * start
    assert optimistic[-100:].max() < 0.15 * start
