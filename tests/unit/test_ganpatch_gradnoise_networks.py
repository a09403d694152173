"""ganpatch.gradnoise_networks.measure_networks: per-network counts, the opponent frozen during each gradient,
every minibatch taken at the checkpoint's buffers, and parameters, buffers and requires_grad as loaded at the end."""

import torch

from ganpatch.gradnoise_networks import measure_networks


def gan():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    D = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    return G.train(), D.train()


def state(*modules):
    return [t.detach().clone() for m in modules for t in [*m.parameters(), *m.buffers()]]


def test_measures_each_network_without_changing_anything():
    G, D = gan()
    D[3].bias.requires_grad_(False) # Frozen by the user: must stay frozen, and get no gradient.
    before = state(G, D)
    seen = []

    def compute_gradient(phase):
        seen.append((phase, G[1].running_mean.clone(), D[1].running_mean.clone(),
                     all(p.requires_grad for p in G.parameters()), [p.requires_grad for p in D.parameters()]))
        fake = G(torch.randn(8, 2))
        if phase == 'D':
            (D(fake.detach()).mean() - D(torch.randn(8, 3) + 1).mean()).backward()
        else:
            (-D(fake).mean()).backward()

    meter = measure_networks({'D': D, 'G': G}, compute_gradient, {'D': 4, 'G': 2}, log=lambda *_: None)
    assert [phase for phase, *_ in seen] == ['D', 'G'] * 2 + ['D'] * 2 + ['D', 'G'] * 2 + ['D'] * 2 # Both passes.
    assert {name: len(norms) for name, norms in meter.noise_norms.items()} == {'D': 4, 'G': 2}
    assert meter.num_full == {'D': 4, 'G': 2}
    for phase, g_mean, d_mean, g_grad, d_grad in seen:
        assert torch.equal(g_mean, before[len(list(G.parameters()))]) # Every minibatch starts at the checkpoint's buffers.
        assert torch.equal(d_mean, D[1].running_mean)
        assert g_grad == (phase == 'G') # Only the measured network requires grad ...
        assert d_grad == [phase == 'D'] * 5 + [False] # ... and never a parameter the user froze.
    assert all(torch.equal(a, b) for a, b in zip(state(G, D), before))
    assert all(p.requires_grad for p in G.parameters()) and [p.requires_grad for p in D.parameters()] == [True] * 5 + [False]
    assert all(len(norms) == 0 or min(norms) > 0 for norms in meter.noise_norms.values())


def test_requires_grad_is_restored_after_an_error():
    G, D = gan()

    def failing(phase):
        raise RuntimeError('no data')

    try:
        measure_networks({'D': D, 'G': G}, failing, 2, log=lambda *_: None)
    except RuntimeError:
        pass
    assert all(p.requires_grad for p in [*G.parameters(), *D.parameters()])
