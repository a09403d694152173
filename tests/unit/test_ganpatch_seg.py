"""ganpatch.seg.optimizer_step: a plain step is zero_grad/gradient/step; an extragradient step is a whole
clipped-SEG step on two fresh minibatches (hand-computed), ends at a real iterate, and keeps buffer updates
of the extrapolation pass but not those of the pass at the extrapolated point."""

import pytest
import torch

from ganpatch.optim import build_optimizer
from ganpatch.seg import optimizer_step

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
