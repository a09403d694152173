"""ganpatch.buffers.preserved_buffers: BatchNorm statistics and a spectral-norm vector come back as they were,
in place, after forwards, an exception, or a buffer the forward replaced; parameters and outputs are untouched.
held_power_iteration: torch.nn.utils.spectral_norm layers normalize with the stored vectors, which stay, while
the rest of the network keeps its mode; advance_power_iteration: the iteration a training forward makes."""

import pytest
import torch
from torch.nn.utils import spectral_norm

from ganpatch.buffers import advance_power_iteration, held_power_iteration, preserved_buffers, spectral_norm_layers


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


def sn_network():
    """Two spectral-norm layers around a BatchNorm layer, in train mode, with u and v after 5 iterations."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(spectral_norm(torch.nn.Linear(4, 6)), torch.nn.BatchNorm1d(6),
                              spectral_norm(torch.nn.Linear(6, 1), n_power_iterations=2))
    for _ in range(5):
        net(torch.randn(8, 4))
    return net.train()


def vectors(net):
    return [b.clone() for layer, _ in spectral_norm_layers(net) for b in (layer.weight_u, layer.weight_v)]


def test_spectral_norm_layers_finds_the_normalized_layers():
    net = sn_network()
    assert [layer for layer, _ in spectral_norm_layers(net)] == [net[0], net[2]]


def test_held_power_iteration_normalizes_with_the_stored_vectors():
    net = sn_network()
    before, x = vectors(net), torch.randn(8, 4)
    with held_power_iteration(net):
        assert [net[0].training, net[1].training, net[2].training] == [False, True, False]  # BatchNorm keeps its mode.
        first, second = net(x), net(x)
        for layer in [net[0], net[2]]:
            sigma = layer.weight_u @ layer.weight_orig @ layer.weight_v
            assert torch.allclose(layer.weight, layer.weight_orig / sigma)
    assert torch.equal(first, second)  # One function for every forward.
    assert all(torch.equal(a, b) for a, b in zip(vectors(net), before))
    assert all(layer.training for layer in net.modules())
    net(x)  # Out of the block the iteration runs again.
    assert not torch.equal(vectors(net)[0], before[0])


def test_held_power_iteration_gives_the_modes_back_after_an_exception():
    net = sn_network()
    net[2].eval()
    with pytest.raises(RuntimeError, match='boom'):
        with held_power_iteration(net):
            raise RuntimeError('boom')
    assert [net[0].training, net[1].training, net[2].training] == [True, True, False]


def test_advance_power_iteration_is_the_iteration_of_a_training_forward():
    forwarded, advanced = sn_network(), sn_network()
    forwarded(torch.randn(8, 4))
    advance_power_iteration(advanced)
    assert all(torch.equal(a, b) for a, b in zip(vectors(forwarded), vectors(advanced)))
    assert not torch.equal(vectors(advanced)[0], vectors(sn_network())[0])  # It did iterate.
