"""Heavy-tailed gradient-noise diagnostics at a fixed checkpoint (no parameter updates).

Following Gorbunov et al., "Clipped Stochastic Methods for Variational Inequalities with Heavy-Tailed Noise",
NeurIPS 2022 (arXiv 2206.01095) (their gradient-noise histograms of GANs), per phase (a named network, or one
loss of it: e.g. `Gmain`, `Greg`, `Dmain`, `Dreg`; phases are never pooled):

  pass 1:  g_bar = (1/N) sum_b g_b                       (mean minibatch gradient, `add_full` / `finish_full`)
  pass 2:  r_b = || g_b - g_bar ||_2 on fresh minibatches (`add_stochastic`)

Memory is O(P) per phase (one running sum, one flat gradient at a time), never O(N * P); the N norms are kept
as Python floats. A gradient accumulated over sub-batches is fine: call `add_*` once per COMPLETED minibatch
gradient. `all_reduce(flat)` (optional) averages a flat gradient across processes in place, so every rank sees
the same numbers; only one rank should call `save`.

Heavy tails are reported in numbers (`noise_statistics`): excess kurtosis, Hill's tail index and the count
beyond mu + 3 sigma against the Gaussian expectation, besides the histograms (`ganpatch.gradnoise_plot`).
"""

import json
import math
import os
import re
import time

import numpy as np
import torch

MODES = ('full', 'stochastic', 'both')
GAUSSIAN_TAIL_BEYOND_3_SIGMA = 0.5 * math.erfc(3 / math.sqrt(2)) # P(Z > 3) = 0.00135 for Z ~ N(0, 1).


class GradientNoiseMeter:
    """Running pass-1 sums and pass-2 noise norms for named phases (see the module docstring).

    Args:
        phases: {name: parameters}. A parameter whose `.grad` is None counts as a zero gradient.
        all_reduce: optional callable averaging a flat float32 tensor across processes in place.
    """

    def __init__(self, phases, all_reduce=None):
        if len(phases) == 0:
            raise ValueError('GradientNoiseMeter needs at least one phase')
        self.phases = {}
        for name, params in phases.items():
            if not re.fullmatch(r'[A-Za-z0-9_.-]+', name):
                raise ValueError(f'Phase name {name!r} must be usable as a file name ([A-Za-z0-9_.-])')
            params = list(params)
            if len(params) == 0:
                raise ValueError(f'Phase {name!r} has no parameters')
            self.phases[name] = params
        self.all_reduce = all_reduce
        self.num_full = {name: 0 for name in self.phases}  # Minibatches in pass 1.
        self.full_grads = {}                                # name -> flat g_bar, after finish_full / load_full.
        self.noise_norms = {name: [] for name in self.phases}
        self._sums = {}

    def _flat_grad(self, phase):
        if phase not in self.phases:
            raise KeyError(f'Unknown phase {phase!r}; the meter has {", ".join(self.phases)}')
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.phases[phase]]
        flat = torch.cat([grad.detach().reshape(-1).float() for grad in grads])
        if self.all_reduce is not None:
            self.all_reduce(flat)
        return flat

    @torch.no_grad()
    def add_full(self, phase):
        """Pass 1: add the current minibatch gradient of `phase` to its running sum."""
        if phase in self.full_grads:
            raise RuntimeError(f'Pass 1 of phase {phase!r} is already finished')
        flat = self._flat_grad(phase)
        if phase in self._sums:
            self._sums[phase].add_(flat)
        else:
            self._sums[phase] = flat
        self.num_full[phase] += 1

    def finish_full(self):
        """Pass 1 done: g_bar = sum / N for every phase."""
        missing = [name for name in self.phases if self.num_full[name] == 0 and name not in self.full_grads]
        if missing:
            raise RuntimeError(f'No pass-1 gradient was added for phase(s) {", ".join(missing)}')
        for name, total in self._sums.items():
            self.full_grads[name] = total.div_(self.num_full[name])
        self._sums = {}

    def load_full(self, run_dir):
        """Reuse g_bar saved by an earlier run (`<phase>_full_grad.pth` in `run_dir`); checks the shapes."""
        for name, params in self.phases.items():
            path = os.path.join(run_dir, f'{name}_full_grad.pth')
            if not os.path.isfile(path):
                raise FileNotFoundError(f'No full gradient for phase {name!r}: {path} does not exist (run pass 1 first)')
            saved = torch.load(path, map_location='cpu', weights_only=True)
            shapes = [list(p.shape) for p in params]
            if saved['shapes'] != shapes:
                raise ValueError(f'{path} was measured on parameters of other shapes than phase {name!r} has '
                    f'({len(saved["shapes"])} vs {len(shapes)} tensors): a different network?')
            self.full_grads[name] = saved['full_grad'].to(params[0].device)
            self.num_full[name] = int(saved['num_batches'])

    @torch.no_grad()
    def add_stochastic(self, phase):
        """Pass 2: record || g_b - g_bar ||_2 for the current minibatch gradient of `phase`."""
        if phase not in self.full_grads:
            raise RuntimeError(f'No full gradient for phase {phase!r}: call finish_full() or load_full() first')
        flat = self._flat_grad(phase)
        self.noise_norms[phase].append(float(flat.sub_(self.full_grads[phase]).norm()))

    def statistics(self):
        """noise_statistics() of every phase with pass-2 norms."""
        return {name: noise_statistics(norms) for name, norms in self.noise_norms.items() if len(norms) > 0}

    def save(self, run_dir):
        """Write `<phase>_full_grad.pth`, `<phase>_stoch_noise.npy` and, when pass 2 ran, `noise_stats.json`,
        `results_norm.png` and `results_lognorm.png` into `run_dir`. Returns the statistics per phase."""
        os.makedirs(run_dir, exist_ok=True)
        for name, full_grad in self.full_grads.items():
            torch.save(dict(full_grad=full_grad.cpu(), num_batches=self.num_full[name], shapes=[list(p.shape) for p in self.phases[name]]),
                os.path.join(run_dir, f'{name}_full_grad.pth'))
        norms = {name: np.asarray(values, dtype=np.float64) for name, values in self.noise_norms.items() if len(values) > 0}
        for name, values in norms.items():
            np.save(os.path.join(run_dir, f'{name}_stoch_noise.npy'), values)
        stats = self.statistics()
        if stats:
            with open(os.path.join(run_dir, 'noise_stats.json'), 'w') as f:
                json.dump(stats, f, indent=2)
            from ganpatch import gradnoise_plot # matplotlib only here.
            gradnoise_plot.plot_noise_histograms(norms, stats, os.path.join(run_dir, 'results_norm.png'), log_density=False)
            gradnoise_plot.plot_noise_histograms(norms, stats, os.path.join(run_dir, 'results_lognorm.png'), log_density=True)
        return stats

    def save_authors_files(self, run_dir, file_names):
        """Also write the measurement under the file names and in the formats of the clipped-methods authors' code
        (github.com/busycalibrating/clipped-stochastic-methods), so that scripts written for their outputs read
        ours. `file_names` = {phase: (full-gradient file, noise file)}, e.g. {'G': ('full_grad_G.pth',
        'stoch_noise_G.npy')} for their WGAN-GP measurement. Their formats: the full gradient is a bare flat tensor
        (torch.save; theirs stayed on the GPU, this one is on the CPU), the noise norms a float64 .npy array. Phases
        without a full gradient or without norms get no such file."""
        unknown = [name for name in file_names if name not in self.phases]
        if unknown:
            raise KeyError(f'Unknown phase(s) {", ".join(unknown)}; the meter has {", ".join(self.phases)}')
        for name, (full_grad_file, noise_file) in file_names.items():
            if name in self.full_grads:
                torch.save(self.full_grads[name].cpu(), os.path.join(run_dir, full_grad_file))
            if len(self.noise_norms.get(name, [])) > 0:
                np.save(os.path.join(run_dir, noise_file), np.asarray(self.noise_norms[name], dtype=np.float64))


def noise_statistics(norms):
    """Summary of noise norms r_1..r_n, with heavy-tail indicators.

    Returns n, mean, std (ddof 1), median, p99, max; excess_kurtosis (m4 / m2^2 - 3: 0 for a Gaussian);
    hill_tail_index with hill_k (Hill 1975: alpha = k / sum_{i<=k} ln(r_(i) / r_(k+1)) over the k = floor(sqrt(n))
    largest values; small alpha = heavy tail, e.g. ~df for Student-t); beyond_3sigma, the count above
    mean + 3 std, against gaussian_expected_beyond_3sigma = n * P(Z > 3) = 0.00135 n.
    """
    r = np.asarray(norms, dtype=np.float64).ravel()
    n = len(r)
    if n < 2:
        raise ValueError(f'noise_statistics needs at least 2 norms, got {n}')
    mean, std = float(r.mean()), float(r.std(ddof=1))
    centred = r - mean
    m2 = float(np.mean(centred ** 2))
    stats = dict(n=n, mean=mean, std=std, median=float(np.median(r)), p99=float(np.percentile(r, 99)), max=float(r.max()),
        excess_kurtosis=float(np.mean(centred ** 4) / m2 ** 2 - 3) if m2 > 0 else 0.0)
    k = min(int(math.sqrt(n)), n - 1)
    top = np.sort(r)[::-1][:k + 1]
    if top[k] > 0 and np.any(top[:k] > top[k]):
        stats.update(hill_tail_index=float(k / np.sum(np.log(top[:k] / top[k]))), hill_k=k)
    else:
        stats.update(hill_tail_index=None, hill_k=k) # Degenerate tail (ties or zeros).
    stats.update(beyond_3sigma=int(np.sum(r > mean + 3 * std)), gaussian_expected_beyond_3sigma=n * GAUSSIAN_TAIL_BEYOND_3_SIGMA)
    return stats


def measure_gradient_noise(meter, compute_gradient, num_batches, mode='both', log=print):
    """Run pass 1 and/or pass 2, with progress output.

    `num_batches` is the number of minibatches per pass: one int for every phase, or {phase: int} (the authors'
    WGAN-GP measurement used {'D': 5000, 'G': 1000}, one per D and G step of 1000 outer steps). Phases take turns,
    each until its own count is reached. Before every `compute_gradient(phase)` call the grads of all the meter's
    parameters are set to None, so nothing accumulates across minibatches; `compute_gradient` must leave the full
    minibatch gradient of `phase` in `.grad` (accumulating over sub-batches is fine).
    mode 'full': pass 1 only; 'stochastic': pass 2 only (g_bar from `meter.load_full`); 'both': pass 1 then 2.
    """
    if mode not in MODES:
        raise ValueError(f'Unknown mode {mode!r}; expected one of {", ".join(MODES)}')
    counts = _batches_per_phase(meter, num_batches)
    if mode == 'stochastic' and any(name not in meter.full_grads for name in meter.phases):
        raise RuntimeError('mode=stochastic needs the full gradients: call meter.load_full(run_dir) first')
    params = list({id(p): p for phase_params in meter.phases.values() for p in phase_params}.values())
    passes = []
    if mode in ('full', 'both'):
        passes.append(('pass 1 (mean gradient)', meter.add_full, meter.finish_full))
    if mode in ('stochastic', 'both'):
        passes.append(('pass 2 (noise norms)', meter.add_stochastic, None))
    for title, add, finish in passes:
        log(f'Gradient noise, {title}: ' + ', '.join(f'{count} minibatches of {name}' for name, count in counts.items()))
        progress = _Progress(title, sum(counts.values()), log)
        for index in range(max(counts.values())):
            for phase, count in counts.items():
                if index < count:
                    for p in params:
                        p.grad = None
                    compute_gradient(phase)
                    add(phase)
                    progress.advance()
        if finish is not None:
            finish()


def _batches_per_phase(meter, num_batches):
    """{phase: positive int} from an int for every phase or a dict naming exactly the meter's phases."""
    counts = num_batches if isinstance(num_batches, dict) else {name: num_batches for name in meter.phases}
    if set(counts) != set(meter.phases):
        raise ValueError(f'num_batches names phases {", ".join(counts)}; the meter has {", ".join(meter.phases)}')
    for name, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f'num_batches must be a positive integer per phase, got {count!r} for {name!r}')
    return {name: counts[name] for name in meter.phases}


class _Progress:
    """Logs every 5% of a pass, and at least every 30 s, with the rate and the time left."""

    def __init__(self, title, total, log, every_s=30.0):
        self.title, self.total, self.log, self.every_s = title, total, log, every_s
        self.done = 0
        self.start = self.last_time = time.monotonic()
        self.last_percent = 0

    def advance(self):
        self.done += 1
        now = time.monotonic()
        percent = 100 * self.done // self.total
        if self.done == self.total or percent >= self.last_percent + 5 or now - self.last_time >= self.every_s:
            elapsed = now - self.start
            left = elapsed / self.done * (self.total - self.done)
            self.log(f'  {self.title}: {self.done}/{self.total} ({percent}%), {self.done / max(elapsed, 1e-9):.2f} minibatch/s, '
                f'{elapsed:.0f} s elapsed, ~{left:.0f} s left')
            self.last_percent, self.last_time = percent - percent % 5, now
