"""Histograms of gradient-noise norms (`ganpatch.gradnoise`): one panel per phase, with the fitted normal
N(mean, std^2) and the statistics of `noise_statistics` written in the panel. Draws on a standalone
matplotlib Figure (Agg canvas), so it never touches pyplot's global backend."""

import math

import numpy as np


def plot_noise_histograms(norms, stats, path, log_density=False):
    """Write a PNG with one histogram panel per phase.

    Args:
        norms: {phase: 1-D array of || g_b - g_bar ||}.
        stats: {phase: noise_statistics(...)}.
        path: output PNG.
        log_density: log-scaled density axis (`results_lognorm.png`), where a Gaussian is a parabola and a heavy
            tail shows as bars far above it.
    """
    from matplotlib.figure import Figure

    names = list(norms)
    fig = Figure(figsize=(5.5 * len(names), 4.2))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        values, s = np.asarray(norms[name]), stats[name]
        counts, edges, _ = ax.hist(values, bins=min(60, max(10, len(values) // 10)), density=True, color='tab:blue', alpha=0.6, label='measured')
        x = np.linspace(edges[0], edges[-1], 400)
        if s['std'] > 0:
            pdf = np.exp(-0.5 * ((x - s['mean']) / s['std']) ** 2) / (s['std'] * math.sqrt(2 * math.pi))
            ax.plot(x, pdf, color='tab:red', lw=1.5, label=f'normal fit N({s["mean"]:.3g}, {s["std"]:.3g}²)')
        if log_density:
            ax.set_yscale('log')
            positive = counts[counts > 0]
            if len(positive):
                ax.set_ylim(positive.min() / 3, positive.max() * 3)
        hill = 'n/a' if s['hill_tail_index'] is None else f'{s["hill_tail_index"]:.2f}'
        text = (f'n = {s["n"]}\nmean = {s["mean"]:.4g}\nstd = {s["std"]:.4g}\nmedian = {s["median"]:.4g}\n'
            f'p99 = {s["p99"]:.4g}\nmax = {s["max"]:.4g}\nexcess kurtosis = {s["excess_kurtosis"]:.2f}\n'
            f'Hill index = {hill} (k = {s["hill_k"]})\n> μ+3σ: {s["beyond_3sigma"]} (Gaussian: {s["gaussian_expected_beyond_3sigma"]:.1f})')
        ax.text(0.97, 0.97, text, transform=ax.transAxes, ha='right', va='top', fontsize=8, family='monospace',
            bbox=dict(boxstyle='round', facecolor='white', alpha=0.85))
        ax.set_title(f'{name}: gradient noise ‖g_b − ḡ‖₂')
        ax.set_xlabel('‖g_b − ḡ‖₂')
        ax.set_ylabel('density (log scale)' if log_density else 'density')
        ax.legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
