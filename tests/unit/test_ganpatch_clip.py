"""ganpatch.clip: one player's gradient clipping, against hand values and torch.nn.utils."""

import math

import pytest
import torch

from ganpatch.clip import CLIP_MODES, check_clip_args, clip_gradients_, global_grad_norm, parse_norm_type


def params_with_grads(*grads):
    params = []
    for grad in grads:
        param = torch.nn.Parameter(torch.zeros(len(grad)))
        param.grad = torch.tensor(grad, dtype=torch.float32)
        params.append(param)
    return params


def random_params(seed, shapes=((3, 4), (7,), (2, 2, 5))):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator) * 3
    return params


def test_modes():
    assert CLIP_MODES == ('none', 'norm', 'value')


def test_norm_mode_hand_values():
    params = params_with_grads([3.0, 4.0], [12.0]) # One global norm: sqrt(9 + 16 + 144) = 13.
    norm = clip_gradients_(params, 'norm', 6.5)
    assert norm.ndim == 0 and float(norm) == pytest.approx(13.0)
    assert params[0].grad.tolist() == pytest.approx([1.5, 2.0])
    assert params[1].grad.tolist() == pytest.approx([6.0])


def test_value_mode_hand_values():
    params = params_with_grads([3.0, -4.0, 0.5], [-0.25])
    norm = clip_gradients_(params, 'value', 1.0)
    assert float(norm) == pytest.approx(math.sqrt(9 + 16 + 0.25 + 0.0625))
    assert params[0].grad.tolist() == [1.0, -1.0, 0.5]
    assert params[1].grad.tolist() == [-0.25]


def test_none_mode_leaves_gradients_and_returns_the_norm():
    params = params_with_grads([3.0, 4.0])
    assert float(clip_gradients_(params, 'none', None)) == pytest.approx(5.0)
    assert params[0].grad.tolist() == [3.0, 4.0]


@pytest.mark.parametrize('threshold', [0.1, 2.0, 1e3])
def test_norm_mode_matches_clip_grad_norm_(threshold):
    ours, theirs = random_params(0), random_params(0)
    norm = clip_gradients_(ours, 'norm', threshold)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, threshold, foreach=True)
    torch.testing.assert_close(norm, their_norm)
    for a, b in zip(ours, theirs): # torch divides by norm + 1e-6; we use min(1, threshold / norm) exactly.
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('threshold', [0.01, 1.0, 100.0])
def test_value_mode_matches_clip_grad_value_(threshold):
    ours, theirs = random_params(1), random_params(1)
    clip_gradients_(ours, 'value', threshold)
    torch.nn.utils.clip_grad_value_(theirs, threshold, foreach=True)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize('mode', ['norm', 'value'])
def test_zero_gradient_stays_zero(mode):
    params = params_with_grads([0.0, 0.0], [0.0])
    assert float(clip_gradients_(params, mode, 1.0)) == 0.0
    assert all(torch.equal(param.grad, torch.zeros(len(param))) for param in params)


def test_missing_gradients_are_skipped():
    params = params_with_grads([3.0, 4.0]) + [torch.nn.Parameter(torch.ones(5))]
    assert float(clip_gradients_(params, 'norm', 1.0)) == pytest.approx(5.0)
    assert params[0].grad.tolist() == pytest.approx([0.6, 0.8])
    assert params[1].grad is None
    assert float(clip_gradients_([torch.nn.Parameter(torch.ones(2))], 'norm', 1.0)) == 0.0 # None at all.


def test_threshold_exactly_at_the_norm_leaves_the_gradient_unchanged():
    params = params_with_grads([3.0, 4.0])
    clip_gradients_(params, 'norm', 5.0)
    assert params[0].grad.tolist() == [3.0, 4.0] # Bit for bit (clip_grad_norm_ would scale by 5 / (5 + 1e-6)).
    params = params_with_grads([0.5, -0.5])
    clip_gradients_(params, 'value', 0.5)
    assert params[0].grad.tolist() == [0.5, -0.5]


@pytest.mark.parametrize('mode', ['norm', 'value', 'none'])
@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_nonfinite_gradients_are_left_alone_and_reported(mode, bad):
    params = params_with_grads([3.0, bad], [100.0])
    norm = clip_gradients_(params, mode, 1.0)
    assert not math.isfinite(float(norm))
    assert params[0].grad[0] == 3.0 and params[1].grad.tolist() == [100.0] # Not rescaled, not clamped.


def test_overflowing_squares_still_give_a_finite_norm():
    params = params_with_grads([1e30, 1e30], [1e30])
    assert float(global_grad_norm([param.grad for param in params])) == pytest.approx(math.sqrt(3) * 1e30, rel=1e-6)
    clip_gradients_(params, 'norm', 1.0)
    assert float(global_grad_norm([param.grad for param in params])) == pytest.approx(1.0, rel=1e-5)


def test_single_tensor_and_generator_inputs():
    params = params_with_grads([3.0, 4.0])
    clip_gradients_(params[0], 'norm', 1.0)
    assert params[0].grad.tolist() == pytest.approx([0.6, 0.8])
    clip_gradients_(iter(params), 'value', 0.7)
    assert params[0].grad.tolist() == pytest.approx([0.6, 0.7])


@pytest.mark.parametrize('mode, threshold, extra, message', [
    ('l2', 1.0, {}, 'Unknown clip mode'),
    ('norm', None, {}, 'needs a clip threshold'),
    ('value', 0.0, {}, 'must be a finite number > 0'),
    ('norm', -1.0, {}, 'must be a finite number > 0'),
    ('norm', math.nan, {}, 'must be a finite number > 0'),
    ('norm', 1.0, dict(norm_type=0.5), 'norm type must be a number >= 1 or inf'),
    ('norm', 1.0, dict(norm_type='l2'), 'norm type must be a number >= 1 or inf'),
    ('norm', 1.0, dict(norm_type=math.nan), 'norm type must be a number >= 1 or inf'),
    ('norm', 1.0, dict(norm_type=True), 'norm type must be a number >= 1 or inf'),
    ('norm', 1.0, dict(norm_eps=-1e-6), 'norm eps must be a finite number >= 0'),
    ('norm', 1.0, dict(norm_eps=math.inf), 'norm eps must be a finite number >= 0'),
    ('value', 1.0, dict(norm_type=1.0), "applies to clip mode 'norm', not 'value'"),
    ('none', None, dict(norm_eps=1e-6), "applies to clip mode 'norm', not 'none'"),
])
def test_bad_arguments(mode, threshold, extra, message):
    with pytest.raises(ValueError, match=message):
        clip_gradients_(params_with_grads([1.0]), mode, threshold, **extra)


def test_norm_types():
    assert [parse_norm_type(p) for p in [2, 1.0, 'inf', '3', math.inf]] == [2.0, 1.0, math.inf, 3.0, math.inf]
    check_clip_args('none', None, 2, 0) # The defaults are fine with every mode.
    check_clip_args('value', 1.0, '2', 0.0)
    check_clip_args('norm', 1.0, 'inf', 1e-6)


@pytest.mark.parametrize('norm_type, expected', [(1, 19.0), (math.inf, 12.0), (3, (27 + 64 + 1728) ** (1 / 3))])
def test_p_norm_hand_values(norm_type, expected):
    params = params_with_grads([3.0, -4.0], [12.0])
    norm = clip_gradients_(params, 'norm', 6.0, norm_type=norm_type)
    assert float(norm) == pytest.approx(expected, rel=1e-6)
    assert params[0].grad.tolist() == pytest.approx([3.0 * 6 / expected, -4.0 * 6 / expected], rel=1e-6)


@pytest.mark.parametrize('norm_type', [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize('threshold', [0.1, 2.0, 1e3])
def test_norm_eps_matches_clip_grad_norm_bit_for_bit(norm_type, threshold):
    """norm_eps=1e-6 is torch's arithmetic: the same norm, min(1, c/(||g|| + 1e-6)), the same products."""
    ours, theirs = random_params(2), random_params(2)
    norm = clip_gradients_(ours, 'norm', threshold, norm_type=norm_type, norm_eps=1e-6)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, threshold, norm_type=norm_type)
    assert torch.equal(norm, their_norm)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))


def test_norm_eps_shrinks_a_gradient_at_the_threshold_as_torch_does():
    params = params_with_grads([3.0, 4.0])
    clip_gradients_(params, 'norm', 5.0, norm_eps=1e-6)
    assert params[0].grad.tolist() == pytest.approx([3.0 * 5 / (5 + 1e-6), 4.0 * 5 / (5 + 1e-6)], rel=1e-7)
    assert params[0].grad.tolist() != [3.0, 4.0] # Where the default leaves it untouched (see above).


@pytest.mark.parametrize('norm_type', [1.0, 3.0, math.inf])
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_nonfinite_gradients_give_a_nonfinite_p_norm(norm_type, bad):
    params = params_with_grads([3.0, bad], [100.0])
    assert not math.isfinite(float(clip_gradients_(params, 'norm', 1.0, norm_type=norm_type)))
    assert params[1].grad.tolist() == [100.0]


def test_overflowing_p_norm_is_recomputed():
    grads = [torch.tensor([1e20, 1e20])] # |g|^3 overflows float32, the 3-norm does not.
    assert float(global_grad_norm(grads, 3.0)) == pytest.approx(2 ** (1 / 3) * 1e20, rel=1e-6)
