"""Histograms of gradient-noise norms (`ganpatch.gradnoise`), one row per phase.

Each row holds the histogram of the phase's norms with the fitted normal N(mean, std^2) and, in a panel
beside it, the legend and the statistics of `noise_statistics`, so that no text ever covers a bar. The
density axis is scaled to show both the bars and the body of the fitted normal (to 3 std either side),
and the curve is drawn only where it lies inside the axes. Fewer than `MIN_NORMS_FOR_HISTOGRAM` norms
(a smoke run measures 2 or 3) make the figure say that the histogram is not meaningful.

Draws on a standalone matplotlib Figure (Agg canvas), so it never touches pyplot's global backend.
"""

import math

import numpy as np

MIN_NORMS_FOR_HISTOGRAM = 50  # Below this, a histogram shows single samples, not the shape of a distribution.
FIT_SPAN_STDS = 4              # The x axis covers the fitted normal to mean +- this many std (norms are >= 0).
FIT_SHOWN_STDS = 3             # The log density axis reaches down to the fitted normal's density at 3 std.


def plot_noise_histograms(norms, stats, path, log_density=False):
    """Write a PNG with one row per phase: its histogram and, beside it, the legend and the statistics.

    Args:
        norms: {phase: 1-D array of || g_b - g_bar ||}.
        stats: {phase: noise_statistics(...)}.
        path: output PNG.
        log_density: log-scaled density axis (`results_lognorm.png`), where a Gaussian is a parabola and a heavy
            tail shows as bars far above it.

    Returns the matplotlib Figure, drawn on its Agg canvas (for inspection; it is already saved).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 3.6 * len(norms)), dpi=110, layout='constrained')
    FigureCanvasAgg(fig)
    rows = fig.subplots(len(norms), 2, squeeze=False, width_ratios=[3, 1.3])
    for (ax, side), (name, values) in zip(rows, norms.items()):
        _draw_histogram(ax, np.asarray(values, dtype=np.float64), stats[name], log_density)
        ax.set_title(f'{name}: gradient noise ‖g_b − ḡ‖₂')
        _draw_side_panel(side, ax, stats[name])
    fig.savefig(path)
    return fig


def normal_pdf(x, mean, std):
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _draw_histogram(ax, values, s, log_density):
    """Bars (density), the fitted normal, and axis limits that show both."""
    bins = min(60, max(10, len(values) // 10))
    counts, edges, _ = ax.hist(values, bins=bins, density=True, color='tab:blue', alpha=0.6, label='measured')
    fit = s['std'] > 0
    lo, hi = edges[0], edges[-1]
    if fit:
        lo = min(lo, max(0.0, s['mean'] - FIT_SPAN_STDS * s['std']))
        hi = max(hi, s['mean'] + FIT_SPAN_STDS * s['std'])
        x = np.union1d(np.linspace(lo, hi, 400), [s['mean']])  # The grid holds the peak.
        pdf = normal_pdf(x, s['mean'], s['std'])
        peak = normal_pdf(s['mean'], s['mean'], s['std'])
    ax.set_xlim(lo, hi)
    if log_density:
        ax.set_yscale('log')
        positive = counts[counts > 0]
        bottom, top = positive.min(), positive.max()
        if fit:
            bottom = min(bottom, peak * math.exp(-0.5 * FIT_SHOWN_STDS ** 2))
            top = max(top, peak)
        bottom, top = bottom / 2, top * 2
    else:
        bottom, top = 0.0, 1.05 * max(counts.max(), peak if fit else 0.0)
    ax.set_ylim(bottom, top)
    if fit:
        shown = np.where(pdf >= bottom, pdf, np.nan)  # Below the axis floor the curve would leave the axes.
        ax.plot(x, shown, color='tab:red', lw=1.5, label=f'normal fit N({s["mean"]:.3g}, {s["std"]:.3g}²)')
    ax.set_xlabel('‖g_b − ḡ‖₂')
    ax.set_ylabel('density (log scale)' if log_density else 'density')


def _draw_side_panel(side, ax, s):
    """The legend of `ax`, a warning for too few norms, and the statistics, stacked top-down in `side`."""
    side.axis('off')
    above = side.legend(*ax.get_legend_handles_labels(), loc='upper left', fontsize=8, borderaxespad=0,
                        frameon=False)
    if s['n'] < MIN_NORMS_FOR_HISTOGRAM:
        note = (f'Only {s["n"]} norms (< {MIN_NORMS_FOR_HISTOGRAM}):\nthe histogram and the tail\n'
                f'statistics are not meaningful.\nMeasure more minibatches.')
        above = _below(side, above, note, color='tab:red', fontsize=8, fontweight='bold')
    hill = 'n/a' if s['hill_tail_index'] is None else f'{s["hill_tail_index"]:.2f}'
    text = (f'n = {s["n"]}\nmean = {s["mean"]:.4g}\nstd = {s["std"]:.4g}\nmedian = {s["median"]:.4g}\n'
            f'p99 = {s["p99"]:.4g}\nmax = {s["max"]:.4g}\nexcess kurtosis = {s["excess_kurtosis"]:.2f}\n'
            f'Hill index = {hill} (k = {s["hill_k"]})\n'
            f'> μ+3σ: {s["beyond_3sigma"]} (Gaussian: {s["gaussian_expected_beyond_3sigma"]:.1f})')
    _below(side, above, text, fontsize=8, family='monospace',
           bbox=dict(boxstyle='round', facecolor='white', edgecolor='0.6'))


def _below(side, artist, text, **kwargs):
    """A text in `side` whose top left corner sits 8 points below the lower left corner of `artist`."""
    return side.annotate(text, xy=(0, 0), xycoords=artist, xytext=(0, -8), textcoords='offset points',
                         ha='left', va='top', **kwargs)
