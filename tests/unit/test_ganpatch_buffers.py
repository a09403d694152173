"""ganpatch.buffers.preserved_buffers: BatchNorm statistics and a spectral-norm vector come back as they were,
in place, after forwards, an exception, or a buffer the forward replaced; parameters and outputs are untouched."""

import pytest
import torch

from ganpatch.buffers import preserved_buffers


class PowerIteration(torch.nn.Module):
    """A linear layer with a spectral-norm style vector u that every training forward refines in place,
    and a counter that a forward replaces by a new tensor."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 4))
        self.register_buffer('u', torch.randn(3))
        self.register_buffer('calls', torch.zeros(()))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                v = torch.nn.functional.normalize(self.u @ self.weight, dim=0)
                self.u[:] = torch.nn.functional.normalize(self.weight @ v, dim=0)
            self.calls = self.calls + 1 # A new tensor, not an in-place update.
        return x @ self.weight.t() / (self.u @ self.weight @ torch.nn.functional.normalize(self.u @ self.weight, dim=0))


def network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)), PowerIteration()


def buffers(*modules):
    return [b.clone() for m in modules for b in m.buffers()]


def test_buffers_return_in_place_after_training_forwards():
    net, sn = network()
    before = buffers(net, sn)
    references = [net[1].running_mean, sn.u]
    with preserved_buffers(net, sn):
        out = sn(net(torch.randn(8, 4)))
        assert not torch.equal(net[1].running_mean, before[0]) and int(sn.calls) == 1 # The forward did update them.
    assert all(torch.equal(a, b) for a, b in zip(buffers(net, sn), before))
    assert net[1].running_mean is references[0] and sn.u is references[1] # Same tensors: state_dict views stay valid.
    assert int(net[1].num_batches_tracked) == 0 and int(sn.calls) == 0
    assert out.requires_grad # Outputs and the autograd graph are those of a normal training forward.


def test_forward_inside_equals_a_normal_training_forward():
    net, sn = network()
    x = torch.randn(8, 4)
    with preserved_buffers(net, sn):
        inside = sn(net(x))
    plain = sn(net(x))
    assert torch.equal(inside, plain)


def test_parameters_are_not_restored():
    net, _ = network()
    with preserved_buffers(net):
        with torch.no_grad():
            net[0].weight.add_(1.0)
    assert torch.equal(net[0].weight, network()[0][0].weight + 1.0)


def test_restored_after_an_exception():
    net, sn = network()
    before = buffers(net, sn)
    with pytest.raises(RuntimeError, match='boom'):
        with preserved_buffers(net, sn):
            sn(net(torch.randn(8, 4)))
            raise RuntimeError('boom')
    assert all(torch.equal(a, b) for a, b in zip(buffers(net, sn), before))
