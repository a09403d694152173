"""ganpatch.acclip: ACClip (Zhang et al., NeurIPS 2020) and the clipped-methods authors' four variants, against
hand-computed steps and the authors' arithmetic."""

import math

import pytest
import torch

from ganpatch.acclip import ACCLIP_VARIANTS
from ganpatch.optim import build_optimizer

A = [3.0, 4.0] # f(x) = 1/2 sum(A x^2): gradient A x; at x = (1, 1) g = (3, 4).


def hand_acclip(x, steps, lr, betas, eps, weight_decay, alpha, second_moment, clip=lambda g: g):
    """ACClip on plain floats (Zhang et al. 2020, Algorithm 2; second_moment: the authors' mod=1 division)."""
    m, tau_pow, v, history = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], []
    for _ in range(steps):
        g = clip([a * xi for a, xi in zip(A, x)])
        for i in range(2):
            gi = g[i] + weight_decay * x[i]
            m[i] = betas[0] * m[i] + (1 - betas[0]) * gi
            tau_pow[i] = betas[1] * tau_pow[i] + (1 - betas[1]) * abs(gi) ** alpha
            v[i] = betas[1] * v[i] + (1 - betas[1]) * gi * gi
            factor = min(1.0, tau_pow[i] ** (1 / alpha) / (abs(m[i]) + eps))
            if second_moment:
                factor /= math.sqrt(betas[1] * v[i]) + eps
            x[i] -= lr * factor * m[i]
        history.append(list(x))
    return history


def test_variants_are_the_authors_table():
    """Their train.py: betas (0.9, 0.99) or (0, 0.99), alpha 2 with the second moment (mod 1) or alpha 1 without;
    eps 1e-5 and weight decay 1e-5 throughout. nomom_acclip is acclip without momentum (theirs duplicated
    nomom_paper_acclip; see ganpatch.acclip)."""
    assert ACCLIP_VARIANTS == {
        'acclip': dict(betas=(0.9, 0.99), alpha=2.0, second_moment=True),
        'paper_acclip': dict(betas=(0.9, 0.99), alpha=1.0, second_moment=False),
        'nomom_acclip': dict(betas=(0.0, 0.99), alpha=2.0, second_moment=True),
        'nomom_paper_acclip': dict(betas=(0.0, 0.99), alpha=1.0, second_moment=False),
    }
    for name in ACCLIP_VARIANTS:
        group = build_optimizer(name, [torch.nn.Parameter(torch.ones(2))], lr=0.1).param_groups[0]
        assert (group['eps'], group['weight_decay']) == (1e-5, 1e-5)


@pytest.mark.parametrize('name', list(ACCLIP_VARIANTS))
def test_hand_computed_steps(name):
    param = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer(name, [param], lr=0.1)
    expected = hand_acclip([1.0, 1.0], 4, lr=0.1, eps=1e-5, weight_decay=1e-5, **ACCLIP_VARIANTS[name])
    for x in expected:
        param.grad = torch.tensor(A) * param.detach()
        raw = param.grad.clone()
        opt.step()
        assert param.tolist() == pytest.approx(x, rel=1e-5)
        assert torch.equal(param.grad, raw) # Weight decay is not written into .grad.


@pytest.mark.parametrize('clip_mode, threshold, clip', [
    ('norm', 2.0, lambda g: [gi * min(1.0, 2.0 / math.hypot(*g)) for gi in g]),
    ('value', 3.5, lambda g: [max(-3.5, min(3.5, gi)) for gi in g]),
])
@pytest.mark.parametrize('alpha', [2.0, 1.5])
def test_hand_computed_steps_after_the_network_clip(clip_mode, threshold, clip, alpha):
    param = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer('acclip', [param], lr=0.1, betas=(0.5, 0.9), weight_decay=0.01, alpha=alpha, clip_mode=clip_mode, clip_threshold=threshold)
    expected = hand_acclip([1.0, 1.0], 3, lr=0.1, betas=(0.5, 0.9), eps=1e-5, weight_decay=0.01, alpha=alpha, second_moment=True, clip=clip)
    for x in expected:
        param.grad = torch.tensor(A) * param.detach()
        opt.step()
        assert param.tolist() == pytest.approx(x, rel=1e-5)


def authors_step(params, state, lr, betas, eps, weight_decay, alpha, mod):
    """The authors' DefaultACClip.step (clipped_stylegan3.patch, training/optim.py) in today's torch syntax."""
    for p in params:
        grad = p.grad.clone() # Theirs adds the weight decay into .grad itself.
        s = state.setdefault(p, dict(momentum=torch.zeros_like(p), clip=torch.zeros_like(p), second_moment=torch.zeros_like(p)))
        grad.add_(p.detach(), alpha=weight_decay)
        s['momentum'].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
        s['clip'].mul_(betas[1]).add_(grad.abs().pow(alpha), alpha=1 - betas[1])
        s['second_moment'].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
        denom = s['clip'].pow(1 / alpha).div(s['momentum'].abs().add(eps)).clamp(min=0.0, max=1.0)
        if mod == 1:
            denom.div_(s['second_moment'].mul(betas[1]).sqrt().add(eps))
        with torch.no_grad():
            p.addcmul_(denom, s['momentum'], value=-lr)


@pytest.mark.parametrize('name, changes', [('acclip', {}), ('paper_acclip', {}), ('nomom_paper_acclip', {}), ('acclip', dict(alpha=1.5))])
def test_matches_the_authors_arithmetic(name, changes):
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 4), (4,), (3, 3, 2)]
    ours = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    theirs = [torch.nn.Parameter(param.detach().clone()) for param in ours]
    variant = dict(ACCLIP_VARIANTS[name], **changes)
    opt = build_optimizer(name, ours, lr=0.01, **changes)
    state = {}
    for _ in range(6):
        grads = [torch.randn(shape, generator=generator) * 3 for shape in shapes]
        for param, grad in zip(ours, grads):
            param.grad = grad.clone()
        for param, grad in zip(theirs, grads):
            param.grad = grad.clone()
        opt.step()
        authors_step(theirs, state, lr=0.01, betas=variant['betas'], eps=1e-5, weight_decay=1e-5, alpha=variant['alpha'],
                     mod=int(variant['second_moment']))
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_gradient_spike_moves_a_coordinate_by_at_most_lr_tau():
    """The point of ACClip: without momentum, the step is lr * min(|g|, tau) * sign(g), so one heavy-tailed
    gradient (1000 after a run of 1s) moves its coordinate by lr * tau, not lr * 1000."""
    param = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer('nomom_paper_acclip', [param], lr=0.1, weight_decay=0.0)
    tau = 0.0
    for step in range(50):
        g = 1000.0 if step == 49 else 1.0
        tau = 0.99 * tau + 0.01 * g
        before = param[0].item()
        param.grad = torch.tensor([g, 0.0])
        opt.step()
    assert before - param[0].item() == pytest.approx(0.1 * tau, rel=1e-5) and 0.1 * tau < 0.1 * 11
