"""ganpatch.gradnoise_plot: the fitted normal is drawn inside the axes, no text covers a bar, and too few norms
are called out, on the linear and the log density axis, for few norms (a smoke run) and many heavy-tailed ones."""

import numpy as np
import pytest

from ganpatch.gradnoise import noise_statistics
from ganpatch.gradnoise_plot import MIN_NORMS_FOR_HISTOGRAM, normal_pdf, plot_noise_histograms

RNG = np.random.default_rng(0)
CASES = {
    # What a smoke run measures: the fitted normal's peak lies far below the bars' densities.
    'few': {'D': np.array([3.1, 3.5, 3.2]), 'G': np.array([1.0, 1.2])},
    # What a real measurement gives: heavy-tailed D (max ~25 std above the mean), Gaussian G.
    'many': {'D': np.abs(RNG.standard_t(2, 5000)) + 5, 'G': RNG.normal(10, 1, 1000)},
}
NOT_MEANINGFUL = 'not meaningful'


def draw(tmp_path, case, log_density):
    norms = CASES[case]
    stats = {name: noise_statistics(values) for name, values in norms.items()}
    path = tmp_path / f'{case}-{log_density}.png'
    fig = plot_noise_histograms(norms, stats, path, log_density=log_density)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    histograms = [ax for ax in fig.axes if ax.patches]  # The side panels hold no bars.
    assert [ax.get_title().split(':')[0] for ax in histograms] == list(norms)
    return fig, histograms, stats


@pytest.mark.parametrize('log_density', [False, True])
@pytest.mark.parametrize('case', CASES)
def test_fitted_normal_is_drawn_inside_the_axes(tmp_path, case, log_density):
    fig, histograms, stats = draw(tmp_path, case, log_density)
    for ax in histograms:
        s = stats[ax.get_title().split(':')[0]]
        (line,) = ax.get_lines()
        assert line.get_label().startswith('normal fit')
        x, y = line.get_xdata(), line.get_ydata()
        drawn = np.isfinite(y)
        (xmin, xmax), (ymin, ymax) = ax.get_xlim(), ax.get_ylim()
        assert np.all((x >= xmin) & (x <= xmax))
        assert np.all((y[drawn] >= ymin) & (y[drawn] <= ymax)), (y[drawn].min(), y[drawn].max(), ymin, ymax)
        # The body of the normal is drawn: its peak, and 3 std either side unless that is below 0.
        peak = normal_pdf(s['mean'], s['mean'], s['std'])
        assert y[drawn].max() == pytest.approx(peak, rel=1e-3)
        for side in [-3, 3]:
            at = s['mean'] + side * s['std']
            if at >= 0:
                assert xmin <= at <= xmax and np.isfinite(np.interp(at, x, y))
        # Every bar is inside the axes too (a log axis must not cut off the rarest ones).
        for bar in ax.patches:
            if bar.get_height() > 0:
                assert xmin <= bar.get_x() and bar.get_x() + bar.get_width() <= xmax * (1 + 1e-9)
                assert ymin <= bar.get_height() <= ymax


@pytest.mark.parametrize('log_density', [False, True])
@pytest.mark.parametrize('case', CASES)
def test_no_text_overlaps_the_bars(tmp_path, case, log_density):
    fig, histograms, _ = draw(tmp_path, case, log_density)
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    texts = [artist for panel in fig.axes for artist in [*panel.texts, panel.get_legend()] if artist is not None]
    assert len(texts) >= 2 * len(histograms)  # a legend and the statistics per phase, at least
    boxes = [text.get_window_extent(renderer) for text in texts]
    for box in boxes:  # Nothing is cut off at the figure's edge.
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1
    for ax in histograms:
        plot_area = ax.get_window_extent(renderer)
        bars = [bar.get_window_extent(renderer) for bar in ax.patches if bar.get_height() > 0]
        assert bars
        for text, box in zip(texts, boxes):
            assert not box.overlaps(plot_area), text
            assert not any(box.overlaps(bar) for bar in bars), text
    for i, box in enumerate(boxes):  # The side panel's legend, note and statistics are stacked, not piled.
        for other in boxes[i + 1:]:
            assert not box.overlaps(other)


@pytest.mark.parametrize('case', CASES)
def test_too_few_norms_are_called_out(tmp_path, case):
    fig, histograms, stats = draw(tmp_path, case, log_density=True)
    notes = {}
    for panel in fig.axes:
        for text in panel.texts:
            if NOT_MEANINGFUL in text.get_text():
                notes[text] = text.get_text()
    few = [name for name, s in stats.items() if s['n'] < MIN_NORMS_FOR_HISTOGRAM]
    assert len(notes) == len(few)
    for name in few:
        assert any(f'Only {stats[name]["n"]} norms' in note for note in notes.values())
    assert (case == 'few') == bool(few)


def test_constant_norms_have_no_fitted_curve(tmp_path):
    norms = {'G': np.full(60, 2.0)}
    fig = plot_noise_histograms(norms, {'G': noise_statistics(norms['G'])}, tmp_path / 'flat.png', log_density=True)
    (ax, _) = fig.axes
    assert ax.get_lines() == [] and ax.patches
