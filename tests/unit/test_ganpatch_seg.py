"""ganpatch.seg.optimizer_step: a plain step is zero_grad/gradient/step; an extragradient step is a whole
clipped-SEG step on two fresh minibatches (hand-computed), ends at a real iterate, and keeps buffer updates
of the extrapolation pass but not those of the pass at the extrapolated point (with `modules`; without, it
keeps both). ganpatch.seg.joint_step: two players of a bilinear game step together from one point."""

import pytest
import torch

from ganpatch.optim import build_optimizer
from ganpatch.seg import joint_step, optimizer_step

A = torch.tensor([3.0, 4.0])


class Minibatches:
    """loss(x; xi) = 1/2 sum(A x^2) + xi . x, one fresh xi per call: the gradient is A x + xi. Records
    the point of each call; backward() accumulates, so a missing zero_grad would show in the result."""

    def __init__(self, param, noises):
        self.param, self.noises, self.points = param, [torch.tensor(n) for n in noises], []

    def __call__(self):
        xi = self.noises[len(self.points)]
        self.points.append(self.param.detach().clone())
        loss = 0.5 * (A * self.param ** 2).sum() + (xi * self.param).sum()
        loss.backward()
        return loss.item()


def test_plain_step_uses_one_minibatch():
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.full([2], 100.0) # Stale gradient: must be cleared first.
    opt = build_optimizer('sgd', [param], lr=0.1)
    batches = Minibatches(param, [[1.0, -1.0]])
    loss = optimizer_step(opt, batches)
    assert len(batches.points) == 1 and loss == pytest.approx(0.5 * 7 + 0.0)
    assert param.tolist() == pytest.approx([1 - 0.1 * 4, 1 - 0.1 * 3])


def test_extragradient_step_is_one_whole_seg_step_on_two_minibatches():
    param = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer('extrasgd', [param], lr=0.1, clip_mode='value', clip_threshold=3.5)
    xi1, xi2 = [1.0, -1.0], [-0.5, 2.0]
    batches = Minibatches(param, [xi1, xi2])
    loss = optimizer_step(opt, batches)
    x = torch.ones(2)
    g1 = (A * x + torch.tensor(xi1)).clamp(-3.5, 3.5)
    x_tilde = x - 0.1 * g1
    g2 = (A * x_tilde + torch.tensor(xi2)).clamp(-3.5, 3.5)
    assert torch.equal(batches.points[0], x) and torch.allclose(batches.points[1], x_tilde)
    assert torch.allclose(param.detach(), x - 0.1 * g2) # The update starts from x, not from x~.
    assert not opt.is_extrapolated
    expected_loss = 0.5 * (A * x_tilde ** 2).sum() + (torch.tensor(xi2) * x_tilde).sum()
    assert loss == pytest.approx(expected_loss.item()) # What the update pass returned.


def bn_player(optimizer):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    opt = build_optimizer(optimizer, net.parameters(), lr=0.1)
    data = [torch.randn(8, 3) + 5 * k for k in range(2)] # Two minibatches with very different statistics.
    calls = []

    def compute_gradient():
        out = net(data[len(calls)])
        calls.append(net[1].running_mean.clone())
        out.square().mean().backward()

    return net, opt, compute_gradient, calls


def test_buffers_keep_the_extrapolation_pass_and_drop_the_pass_at_the_extrapolated_point():
    net, opt, compute_gradient, calls = bn_player('extrasgd')
    optimizer_step(opt, compute_gradient, modules=[net])
    after_extrapolation_pass, after_update_pass = calls
    assert not torch.equal(after_update_pass, after_extrapolation_pass) # The pass at x~ did update them ...
    assert torch.equal(net[1].running_mean, after_extrapolation_pass) # ... and was undone; x's pass stays.
    assert int(net[1].num_batches_tracked) == 1


def test_plain_step_keeps_its_buffer_updates():
    net, opt, compute_gradient, calls = bn_player('sgd')
    optimizer_step(opt, compute_gradient, modules=[net])
    assert torch.equal(net[1].running_mean, calls[0]) and int(net[1].num_batches_tracked) == 1


def test_without_modules_the_pass_at_the_extrapolated_point_keeps_its_buffer_updates():
    net, opt, compute_gradient, calls = bn_player('extrasgd')
    optimizer_step(opt, compute_gradient)
    assert torch.equal(net[1].running_mean, calls[1]) and int(net[1].num_batches_tracked) == 2


class BilinearGame:
    """f(x, y) = x . y + noise: x minimizes f, y maximizes it. Each call draws fresh noises and leaves
    x.grad = y + xi_x and y.grad = -x + xi_y; it records the point (x, y) of the call."""

    def __init__(self, x, y, noises):
        self.x, self.y, self.noises, self.points = x, y, [torch.tensor(n) for n in noises], []

    def __call__(self):
        xi_x, xi_y = self.noises[2 * len(self.points)], self.noises[2 * len(self.points) + 1]
        self.points.append((self.x.detach().clone(), self.y.detach().clone()))
        ((self.x * self.y.detach()).sum() + (xi_x * self.x).sum()).backward()
        (-(self.x.detach() * self.y).sum() + (xi_y * self.y).sum()).backward()
        return len(self.points)


def players(optimizer):
    x, y = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([0.5, 1.0]))
    return x, y, build_optimizer(optimizer, [x], lr=0.1), build_optimizer(optimizer, [y], lr=0.2)


def test_joint_seg_step_extrapolates_both_players_from_one_point_then_updates_both_from_the_other():
    x, y, opt_x, opt_y = players('extrasgd')
    noises = [[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6], [0.7, 0.8]]
    game = BilinearGame(x, y, noises)
    assert joint_step([opt_x, opt_y], game) == 2
    x0, y0 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    xi = [torch.tensor(n) for n in noises]
    x_tilde, y_tilde = x0 - 0.1 * (y0 + xi[0]), y0 - 0.2 * (-x0 + xi[1])
    (px0, py0), (px1, py1) = game.points
    assert torch.equal(px0, x0) and torch.equal(py0, y0)
    assert torch.allclose(px1, x_tilde) and torch.allclose(py1, y_tilde)  # Both extrapolated before the second pass.
    assert torch.allclose(x.detach(), x0 - 0.1 * (y_tilde + xi[2]))
    assert torch.allclose(y.detach(), y0 - 0.2 * (-x_tilde + xi[3]))
    assert not opt_x.is_extrapolated and not opt_y.is_extrapolated


def test_joint_plain_step_updates_both_players_from_one_point():
    x, y, opt_x, opt_y = players('sgd')
    game = BilinearGame(x, y, [[0.1, 0.2], [-0.3, 0.4]])
    joint_step([opt_x, opt_y], game)
    assert len(game.points) == 1
    assert torch.allclose(x.detach(), torch.tensor([1.0, -2.0]) - 0.1 * torch.tensor([0.6, 1.2]))
    assert torch.allclose(y.detach(), torch.tensor([0.5, 1.0]) - 0.2 * torch.tensor([-1.3, 2.4]))


def test_joint_step_refuses_a_mix_of_extragradient_and_plain_optimizers_before_any_gradient():
    x, y, opt_x, _ = players('extrasgd')
    opt_y = build_optimizer('sgd', [y], lr=0.2)
    game = BilinearGame(x, y, [[0.1, 0.2], [-0.3, 0.4]])
    with pytest.raises(ValueError, match='all optimizers extragradient, or none'):
        joint_step([opt_x, opt_y], game)
    assert game.points == [] and x.tolist() == [1.0, -2.0] and y.tolist() == [0.5, 1.0]
