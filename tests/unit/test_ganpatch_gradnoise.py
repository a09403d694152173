"""ganpatch.gradnoise: recorded noise norms follow the analytic law of a toy model, phases stay apart, memory
is O(P), sub-batch accumulation and the all-reduce hook, outputs on disk, heavy tails in numbers."""

import json
import math
import os

import numpy as np
import pytest
import scipy.stats
import torch

from ganpatch.gradnoise import GradientNoiseMeter, measure_gradient_noise, noise_statistics


class LinearToy:
    """loss_b(w) = w . (c + sigma * xi_b): the minibatch gradient is c + sigma * xi_b exactly, so pass 2's
    g_b - g_bar = sigma * (xi_b - mean of pass 1's xi) ~ N(0, sigma^2 (1 + 1/N1) I) for Gaussian xi, and
    || g_b - g_bar || follows sigma sqrt(1 + 1/N1) times a chi distribution with `dim` degrees of freedom."""

    def __init__(self, dim, sigma, seed, noise='gaussian', sub_batches=1):
        self.w = torch.nn.Parameter(torch.zeros(dim))
        self.c = torch.linspace(-1, 1, dim)
        self.sigma, self.noise, self.sub_batches = sigma, noise, sub_batches
        self.rng = np.random.default_rng(seed)

    def compute_gradient(self, phase=None):
        self.w.grad = None
        xi = self.rng.standard_t(1.5, size=len(self.c)) if self.noise == 'student-t' else self.rng.standard_normal(len(self.c))
        target = self.c + self.sigma * torch.tensor(xi, dtype=torch.float32)
        for chunk in target.chunk(1) * self.sub_batches: # Accumulate: each sub-batch carries 1/sub_batches of the loss.
            (self.w * chunk).sum().div(self.sub_batches).backward()


def measure(toy, n1, n2, **meter_kwargs):
    meter = GradientNoiseMeter({'G': [toy.w]}, **meter_kwargs)
    for _ in range(n1):
        toy.compute_gradient()
        meter.add_full('G')
    meter.finish_full()
    for _ in range(n2):
        toy.compute_gradient()
        meter.add_stochastic('G')
    return meter


def test_norms_follow_the_analytic_chi_law():
    dim, sigma, n1, n2 = 8, 0.5, 400, 1500
    meter = measure(LinearToy(dim, sigma, seed=0), n1, n2)
    torch.testing.assert_close(meter.full_grads['G'], torch.linspace(-1, 1, dim), atol=4 * sigma / math.sqrt(n1), rtol=0)
    law = scipy.stats.chi(dim, scale=sigma * math.sqrt(1 + 1 / n1))
    norms = np.array(meter.noise_norms['G'])
    for q in [0.1, 0.5, 0.9, 0.99]:
        assert np.quantile(norms, q) == pytest.approx(law.ppf(q), rel=0.05)
    assert scipy.stats.kstest(norms, law.cdf).pvalue > 0.01


def test_sub_batch_accumulation_gives_the_same_numbers():
    one = measure(LinearToy(6, 0.3, seed=1), 50, 50)
    four = measure(LinearToy(6, 0.3, seed=1, sub_batches=4), 50, 50)
    torch.testing.assert_close(one.full_grads['G'], four.full_grads['G'])
    np.testing.assert_allclose(one.noise_norms['G'], four.noise_norms['G'], rtol=1e-5)


def test_phases_are_never_pooled():
    g_toy, d_toy = LinearToy(5, 0.1, seed=2), LinearToy(7, 2.0, seed=3)
    shared_main = torch.nn.Parameter(torch.zeros(3)) # Two phases of one network (like Gmain and Greg).
    meter = GradientNoiseMeter({'G': [g_toy.w], 'D': [d_toy.w], 'Dmain': [shared_main], 'Dreg': [shared_main]})

    def compute_gradient(phase):
        if phase == 'G':
            g_toy.compute_gradient()
        elif phase == 'D':
            d_toy.compute_gradient()
        else:
            shared_main.grad = torch.full((3,), 1.0 if phase == 'Dmain' else -5.0)

    logs = []
    measure_gradient_noise(meter, compute_gradient, 200, log=logs.append)
    stats = meter.statistics()
    assert stats['G']['mean'] == pytest.approx(0.1 * math.sqrt(5), rel=0.1)
    assert stats['D']['mean'] == pytest.approx(2.0 * math.sqrt(7), rel=0.1)
    assert meter.full_grads['Dmain'].tolist() == [1.0] * 3 and meter.full_grads['Dreg'].tolist() == [-5.0] * 3
    assert stats['Dmain']['max'] == 0.0 and stats['Dreg']['max'] == 0.0
    assert any('pass 1' in line and '100%' in line for line in logs) and any('pass 2' in line and '50%' in line for line in logs)


def test_counts_per_phase_and_no_accumulation_across_minibatches():
    d, g = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    calls = []

    def compute_gradient(phase): # A bare backward(): it adds to whatever .grad holds.
        calls.append(phase)
        (d.sum() if phase == 'D' else 2 * g.sum()).backward()

    meter = GradientNoiseMeter({'D': [d], 'G': [g]})
    measure_gradient_noise(meter, compute_gradient, {'G': 2, 'D': 5}, log=lambda _: None)
    assert calls == ['D', 'G', 'D', 'G', 'D', 'D', 'D'] * 2 # Both passes; phases take turns until their count.
    assert meter.num_full == {'D': 5, 'G': 2}
    assert meter.full_grads['D'].tolist() == [1.0] * 2 and meter.full_grads['G'].tolist() == [2.0] * 3
    assert meter.noise_norms == {'D': [0.0] * 5, 'G': [0.0] * 2}


def stored_tensor_elements(meter):
    return sum(t.numel() for t in list(meter.full_grads.values()) + list(meter._sums.values()))


def test_memory_does_not_grow_with_the_number_of_batches():
    sizes = []
    for n in [5, 400]:
        toy = LinearToy(1000, 1.0, seed=4)
        meter = GradientNoiseMeter({'G': [toy.w]})
        for _ in range(n):
            toy.compute_gradient()
            meter.add_full('G')
            sizes.append(('pass1', n, stored_tensor_elements(meter)))
        meter.finish_full()
        for _ in range(n):
            toy.compute_gradient()
            meter.add_stochastic('G')
        sizes.append(('pass2', n, stored_tensor_elements(meter)))
        assert len(meter.noise_norms['G']) == n and all(isinstance(x, float) for x in meter.noise_norms['G'])
    assert {size for _, _, size in sizes} == {1000} # One flat vector per phase, whatever N.


def test_all_reduce_hook_sees_every_flat_gradient():
    calls = []

    def average_with_an_idle_rank(flat): # The other rank's gradient is zero: the mean halves ours.
        calls.append(flat.shape)
        flat.mul_(0.5)

    toy = LinearToy(4, 0.0, seed=5)
    meter = measure(toy, 3, 2, all_reduce=average_with_an_idle_rank)
    assert calls == [torch.Size([4])] * 5
    torch.testing.assert_close(meter.full_grads['G'], 0.5 * torch.linspace(-1, 1, 4))


def test_save_writes_the_files_and_load_full_reuses_the_mean(tmp_path):
    toy = LinearToy(6, 1.0, seed=6)
    other = torch.nn.Parameter(torch.zeros(2, 2))
    meter = GradientNoiseMeter({'G': [toy.w], 'D': [other]})

    def compute_gradient(phase):
        toy.compute_gradient()
        other.grad = toy.w.grad[:4].reshape(2, 2) * 3

    measure_gradient_noise(meter, compute_gradient, 60, log=lambda _: None)
    stats = meter.save(tmp_path)
    for name in ['G_full_grad.pth', 'D_full_grad.pth', 'G_stoch_noise.npy', 'D_stoch_noise.npy', 'noise_stats.json', 'results_norm.png', 'results_lognorm.png']:
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / 'results_norm.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with open(tmp_path / 'noise_stats.json') as f:
        assert json.load(f) == stats
    assert set(stats) == {'G', 'D'}
    for key in ['n', 'mean', 'std', 'median', 'p99', 'max', 'excess_kurtosis', 'hill_tail_index', 'hill_k', 'beyond_3sigma', 'gaussian_expected_beyond_3sigma']:
        assert key in stats['G'], key
    np.testing.assert_array_equal(np.load(tmp_path / 'G_stoch_noise.npy'), meter.noise_norms['G'])
    assert stats['G'] == noise_statistics(meter.noise_norms['G'])

    # Pass 2 alone, from the saved g_bar.
    reloaded = GradientNoiseMeter({'G': [toy.w], 'D': [other]})
    reloaded.load_full(tmp_path)
    torch.testing.assert_close(reloaded.full_grads['G'], meter.full_grads['G'])
    measure_gradient_noise(reloaded, compute_gradient, 5, mode='stochastic', log=lambda _: None)
    assert len(reloaded.noise_norms['D']) == 5

    with pytest.raises(ValueError, match='other shapes'):
        GradientNoiseMeter({'G': [torch.nn.Parameter(torch.zeros(7))], 'D': [other]}).load_full(tmp_path)
    with pytest.raises(FileNotFoundError, match='Dreg'):
        GradientNoiseMeter({'Dreg': [other]}).load_full(tmp_path)


def test_pass1_only_saves_the_mean_gradient(tmp_path):
    toy = LinearToy(3, 1.0, seed=7)
    meter = GradientNoiseMeter({'G': [toy.w]})
    measure_gradient_noise(meter, lambda phase: toy.compute_gradient(), 4, mode='full', log=lambda _: None)
    assert meter.save(tmp_path) == {}
    assert sorted(os.listdir(tmp_path)) == ['G_full_grad.pth']


def test_authors_files_hold_their_formats(tmp_path):
    """save_authors_files: the clipped-methods authors' formats (their FullGradAcc / StochNoiseAcc): the mean of the
    minibatch gradients flattened and concatenated in parameter order as a bare tensor, the norms as float64."""
    first, second = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))
    rng = np.random.default_rng(8)
    seen = []

    def compute_gradient(phase):
        first.grad = torch.tensor(rng.standard_normal((2, 3)), dtype=torch.float32)
        second.grad = torch.tensor(rng.standard_normal(4), dtype=torch.float32)
        seen.append(torch.cat([first.grad.reshape(-1), second.grad.reshape(-1)]))

    meter = GradientNoiseMeter({'D': [first, second]})
    measure_gradient_noise(meter, compute_gradient, 5, log=lambda _: None)
    meter.save_authors_files(tmp_path, {'D': ('full_grad_D.pth', 'stoch_noise_D.npy')})
    assert sorted(os.listdir(tmp_path)) == ['full_grad_D.pth', 'stoch_noise_D.npy']
    full_grad = torch.load(tmp_path / 'full_grad_D.pth', weights_only=True)
    assert type(full_grad) is torch.Tensor and full_grad.dtype == torch.float32 and full_grad.shape == (10,)
    torch.testing.assert_close(full_grad, torch.stack(seen[:5]).mean(0))
    norms = np.load(tmp_path / 'stoch_noise_D.npy')
    assert norms.dtype == np.float64 and norms.shape == (5,)
    np.testing.assert_allclose(norms, [float((g - full_grad).norm()) for g in seen[5:]], rtol=1e-6)

    pass1 = GradientNoiseMeter({'G': [first]})
    measure_gradient_noise(pass1, compute_gradient, 2, mode='full', log=lambda _: None)
    (tmp_path / 'pass1').mkdir()
    pass1.save_authors_files(tmp_path / 'pass1', {'G': ('full_grad_G.pth', 'stoch_noise_G.npy')})
    assert os.listdir(tmp_path / 'pass1') == ['full_grad_G.pth']  # No norms: no noise file.
    with pytest.raises(KeyError, match='Unknown phase'):
        pass1.save_authors_files(tmp_path, {'Dmain': ('a.pth', 'b.npy')})


def test_bad_usage_fails_clearly():
    toy = LinearToy(3, 1.0, seed=8)
    meter = GradientNoiseMeter({'G': [toy.w]})
    with pytest.raises(RuntimeError, match='finish_full'):
        meter.add_stochastic('G')
    with pytest.raises(KeyError, match='Unknown phase'):
        meter.add_full('D')
    with pytest.raises(RuntimeError, match='No pass-1 gradient'):
        meter.finish_full()
    with pytest.raises(RuntimeError, match='load_full'):
        measure_gradient_noise(meter, toy.compute_gradient, 3, mode='stochastic')
    with pytest.raises(ValueError, match='Unknown mode'):
        measure_gradient_noise(meter, toy.compute_gradient, 3, mode='fast')
    with pytest.raises(ValueError, match='positive integer'):
        measure_gradient_noise(meter, toy.compute_gradient, 0)
    with pytest.raises(ValueError, match='positive integer'):
        measure_gradient_noise(meter, toy.compute_gradient, {'G': 2.5})
    with pytest.raises(ValueError, match='names phases D; the meter has G'):
        measure_gradient_noise(meter, toy.compute_gradient, {'D': 3})
    with pytest.raises(ValueError, match='file name'):
        GradientNoiseMeter({'G/main': [toy.w]})


def test_heavy_tailed_noise_shows_in_the_numbers():
    """Student-t (df = 1.5) noise vs Gaussian noise on the same toy: larger excess kurtosis, smaller Hill index,
    many more norms beyond mu + 3 sigma than a Gaussian would give."""
    gaussian = noise_statistics(measure(LinearToy(10, 1.0, seed=9), 200, 1000).noise_norms['G'])
    heavy = noise_statistics(measure(LinearToy(10, 1.0, seed=9, noise='student-t'), 200, 1000).noise_norms['G'])
    print('gaussian', gaussian, '\nstudent-t', heavy)
    assert heavy['excess_kurtosis'] > 10 and abs(gaussian['excess_kurtosis']) < 1
    assert heavy['hill_tail_index'] < 3 < gaussian['hill_tail_index'] / 2
    assert heavy['beyond_3sigma'] > 3 * heavy['gaussian_expected_beyond_3sigma']


def test_noise_statistics_hand_values():
    stats = noise_statistics([1.0, 2.0, 3.0, 4.0])
    assert (stats['n'], stats['mean'], stats['median'], stats['max']) == (4, 2.5, 2.5, 4.0)
    assert stats['std'] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert stats['excess_kurtosis'] == pytest.approx(scipy.stats.kurtosis([1, 2, 3, 4], fisher=True, bias=True))
    assert stats['hill_k'] == 2 and stats['hill_tail_index'] == pytest.approx(2 / (math.log(4 / 2) + math.log(3 / 2)))
    assert stats['gaussian_expected_beyond_3sigma'] == pytest.approx(4 * 0.0013499, rel=1e-4)
    with pytest.raises(ValueError, match='at least 2'):
        noise_statistics([1.0])
