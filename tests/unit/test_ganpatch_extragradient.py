"""ganpatch.optim extragradient (SEG): both half-steps by hand, the bilinear game, real iterates, state_dict
in either state, and the NaN policy at each half-step."""

import copy
import math

import pytest
import torch

from ganpatch.optim import build_optimizer

A = torch.tensor([3.0, 4.0]) # f(x) = 1/2 sum(A x^2): gradient A x.


def quadratic_grad(x):
    return [a * xi for a, xi in zip([3.0, 4.0], x)]


def clipped(g, threshold):
    return [gi * min(1.0, threshold / math.hypot(*g)) for gi in g]


def test_extrasgd_hand_computed_half_steps():
    param = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer('extrasgd', [param], lr=0.1, clip_mode='norm', clip_threshold=1.0)
    x = [1.0, 1.0]
    param.grad = A * param.detach()
    opt.extrapolate()
    x_tilde = [xi - 0.1 * gi for xi, gi in zip(x, clipped(quadratic_grad(x), 1.0))] # (0.94, 0.92)
    assert param.tolist() == pytest.approx(x_tilde, rel=1e-6) and opt.is_extrapolated
    assert [t.tolist() for t in opt.real_params] == [x]
    param.grad = A * param.detach() # Gradient at x~.
    opt.step()
    x_next = [xi - 0.1 * gi for xi, gi in zip(x, clipped(quadratic_grad(x_tilde), 1.0))] # From x, not from x~.
    assert param.tolist() == pytest.approx(x_next, rel=1e-6) and not opt.is_extrapolated
    assert opt.real_params is None


def adam_delta(g, m, v, t, lr=0.1, beta1=0.5, beta2=0.9, eps=1e-3):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return -lr * (m / (1 - beta1 ** t)) / (math.sqrt(v / (1 - beta2 ** t)) + eps), m, v


def test_extraadam_hand_computed_half_steps():
    """Extra-Adam (Gidel et al. 2019): the moments and the step count advance at both half-steps."""
    param = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer('extraadam', [param], lr=0.1, betas=(0.5, 0.9), eps=1e-3, clip_mode='value', clip_threshold=3.5)
    x, m, v, t = [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], 0

    def hand_half_step(start, point):
        """One clipped Adam move from `start` with the gradient at `point`; advances m, v and t."""
        nonlocal m, v, t
        g = [max(-3.5, min(3.5, gi)) for gi in quadratic_grad(point)]
        t += 1
        moves = [adam_delta(g[i], m[i], v[i], t) for i in range(2)]
        m, v = [mv[1] for mv in moves], [mv[2] for mv in moves]
        return [start[i] + moves[i][0] for i in range(2)]

    for _ in range(2):
        param.grad = A * param.detach()
        opt.extrapolate()
        x_tilde = hand_half_step(x, x)
        assert param.tolist() == pytest.approx(x_tilde, rel=1e-5)
        param.grad = A * param.detach()
        opt.step()
        x = hand_half_step(x, x_tilde)
        assert param.tolist() == pytest.approx(x, rel=1e-5)
    assert float(opt.state[param]['step']) == 4


def test_seg_converges_on_a_stochastic_bilinear_game_where_sgda_spirals_out():
    """min_x max_y x^T y with Gaussian gradient noise (std 0.01), lr 0.2, 400 iterations, seeded: simultaneous
    SGDA's |z| grows like (1 + lr^2)^(t/2); SEG (two fresh samples per iteration) contracts to the noise floor."""
    generator = torch.Generator().manual_seed(0)
    noise = lambda: 0.01 * torch.randn(2, generator=generator)

    def play(name):
        x, y = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
        opts = [build_optimizer(name, [p], lr=0.2) for p in (x, y)]
        def gradients():
            x.grad, y.grad = y.detach() + noise(), -x.detach() + noise() # y ascends x^T y.
        for _ in range(400):
            gradients()
            if name == 'extrasgd':
                for opt in opts:
                    opt.extrapolate()
                gradients() # Fresh samples at the extrapolated point.
            for opt in opts:
                opt.step()
        return math.sqrt(float(x.detach().square().sum() + y.detach().square().sum()))

    start = 2.0
    assert play('sgd') > 100 * start
    assert play('extrasgd') < 0.05


@pytest.mark.parametrize('name', ['extrasgd', 'extra_sgd'])
def test_clip_norm_eps_reproduces_clip_grad_norm_at_both_half_steps(name):
    """clip_norm_eps=1e-6: both half-steps clip as torch.nn.utils.clip_grad_norm_, bit for bit (x~ = x - lr g1',
    x <- x - lr g2', g' = min(1, c / (||g|| + 1e-6)) g), also through the authors' spelling extra_sgd."""
    generator = torch.Generator().manual_seed(3)
    ours = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(6, 5), (5,)]]
    theirs = [param.detach().clone() for param in ours]
    opt = build_optimizer(name, ours, lr=0.1, clip_mode='norm', clip_threshold=0.5, clip_norm_eps=1e-6)
    for _ in range(3):
        grads = [[torch.randn(param.shape, generator=generator) for param in ours] for _ in range(2)]
        real = [param.clone() for param in theirs]
        for half, half_grads in enumerate(grads):
            for param, grad in zip(ours, half_grads):
                param.grad = grad.clone()
            (opt.extrapolate if half == 0 else opt.step)()
            holders = [torch.nn.Parameter(torch.empty_like(x)) for x in real]
            for holder, grad in zip(holders, half_grads):
                holder.grad = grad.clone()
            torch.nn.utils.clip_grad_norm_(holders, 0.5)
            theirs = [x.add(holder.grad, alpha=-0.1) for x, holder in zip(real, holders)] # From x at both half-steps.
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def make(name, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(3, 2), (4,)]]
    return params, build_optimizer(name, params, lr=0.1, clip_mode='norm', clip_threshold=1.0)


def set_grads(params, step, bad=None):
    generator = torch.Generator().manual_seed(100 + step)
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator)
    if bad is not None:
        params[0].grad[1, 0] = bad


@pytest.mark.parametrize('name', ['extrasgd', 'extraadam'])
def test_step_without_extrapolate_raises(name):
    params, opt = make(name)
    set_grads(params, 0)
    with pytest.raises(RuntimeError, match='needs a prior extrapolate'):
        opt.step()
    opt.extrapolate()
    with pytest.raises(RuntimeError, match='called twice'):
        opt.extrapolate()


@pytest.mark.parametrize('name', ['extrasgd', 'extraadam'])
def test_real_iterate_shows_the_remembered_point(name):
    params, opt = make(name)
    x = copy.deepcopy(params)
    with opt.real_iterate(): # Not extrapolated: no-op.
        assert all(torch.equal(a, b) for a, b in zip(params, x))
    set_grads(params, 0)
    opt.extrapolate()
    x_tilde = copy.deepcopy(params)
    assert not torch.equal(params[0], x[0])
    with opt.real_iterate():
        assert all(torch.equal(a, b) for a, b in zip(params, x))
        assert opt.is_extrapolated
    assert all(torch.equal(a, b) for a, b in zip(params, x_tilde))


@pytest.mark.parametrize('name', ['extrasgd', 'extraadam'])
@pytest.mark.parametrize('save_extrapolated', [False, True])
def test_state_dict_in_either_state_resumes_exactly(name, save_extrapolated):
    params, opt = make(name)
    for step in range(2):
        set_grads(params, 2 * step)
        opt.extrapolate()
        set_grads(params, 2 * step + 1)
        opt.step()
    if save_extrapolated:
        set_grads(params, 4)
        opt.extrapolate()
    saved = torch.load(_roundtrip(dict(params=params, opt=opt.state_dict())), weights_only=False)
    resumed_params, resumed = make(name, seed=1) # Different starting values: everything comes from the save.
    with torch.no_grad():
        for dst, src in zip(resumed_params, saved['params']):
            dst.copy_(src)
    resumed.load_state_dict(saved['opt'])
    assert resumed.is_extrapolated == save_extrapolated
    for ps, optimizer in [(params, opt), (resumed_params, resumed)]:
        if not save_extrapolated:
            set_grads(ps, 4)
            optimizer.extrapolate()
        set_grads(ps, 5)
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params))


def _roundtrip(obj):
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize('name', ['extrasgd', 'extraadam'])
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_nonfinite_gradient_at_the_extrapolation_skips_the_iteration(name, bad):
    params, opt = make(name)
    x, state = copy.deepcopy(params), copy.deepcopy(opt.state_dict())
    set_grads(params, 0, bad=bad)
    opt.extrapolate()
    assert not opt.is_extrapolated and opt.skipped_steps == 1
    with pytest.raises(RuntimeError, match='called twice'):
        opt.extrapolate() # The skipped iteration still needs its step().
    set_grads(params, 1)
    opt.step() # Completes the skipped iteration without moving.
    assert opt.skipped_steps == 2 and not opt.is_extrapolated
    assert all(torch.equal(a, b) for a, b in zip(params, x))
    assert opt.state_dict()['state'] == state['state']
    set_grads(params, 2)
    opt.extrapolate() # The next iteration runs normally.
    assert opt.is_extrapolated


@pytest.mark.parametrize('name', ['extrasgd', 'extraadam'])
@pytest.mark.parametrize('bad', [math.nan, -math.inf])
def test_nonfinite_gradient_at_the_update_returns_to_the_real_iterate(name, bad):
    params, opt = make(name)
    x = copy.deepcopy(params)
    set_grads(params, 0)
    opt.extrapolate()
    state = copy.deepcopy(opt.state_dict()['state'])
    set_grads(params, 1, bad=bad)
    opt.step()
    assert opt.skipped_steps == 1 and not opt.is_extrapolated and not math.isfinite(float(opt.last_grad_norm))
    assert all(torch.equal(a, b) for a, b in zip(params, x))
    after = opt.state_dict()['state']
    for index, values in state.items(): # The update's state change is not made.
        assert all(torch.equal(value, after[index][key]) for key, value in values.items())


@pytest.mark.parametrize('name', ['sgd', 'extrasgd', 'extraadam'])
def test_deepcopy_keeps_the_clip_settings_and_the_remembered_iterate(name):
    params, opt = make(name)
    set_grads(params, 0)
    if name == 'sgd':
        opt.step()
    else:
        opt.extrapolate()
    clone = copy.deepcopy(dict(params=params, opt=opt))
    assert (clone['opt'].clip_mode, clone['opt'].clip_threshold, clone['opt'].skipped_steps) == ('norm', 1.0, 0)
    if name != 'sgd':
        assert clone['opt'].is_extrapolated
        set_grads(params, 1)
        set_grads(clone['params'], 1)
        opt.step()
        clone['opt'].step()
        assert all(torch.equal(a, b) for a, b in zip(params, clone['params']))


def test_lr_scheduler_drives_both_half_steps():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer('extrasgd', [param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / 10) # Linear decay, as WGAN-GP.
    for step in range(3):
        start = param.item()
        param.grad = torch.ones(1)
        opt.extrapolate()
        assert param.item() == pytest.approx(start - (1 - step / 10)) # The scheduled lr at the extrapolation...
        param.grad = torch.ones(1)
        opt.step()
        scheduler.step()
    assert param.item() == pytest.approx(-(1.0 + 0.9 + 0.8)) # ...and at the update.


def test_add_param_group_between_iterations():
    params, opt = make('extrasgd')
    set_grads(params, 0)
    opt.extrapolate()
    opt.step()
    extra = torch.nn.Parameter(torch.ones(3))
    opt.add_param_group(dict(params=[extra]))
    params = params + [extra]
    set_grads(params, 1) # The same gradient at both half-steps: x <- x - lr * clip(g).
    grads = [param.grad.clone() for param in params]
    opt.extrapolate()
    assert len(opt.real_params) == 3 and torch.equal(opt.real_params[2], torch.ones(3))
    opt.step()
    scale = min(1.0, 1.0 / math.sqrt(sum(float(g.square().sum()) for g in grads)))
    torch.testing.assert_close(extra.detach(), 1 - 0.1 * scale * grads[2])
