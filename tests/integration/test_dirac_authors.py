"""The authors' own Dirac-GAN code (TianjiaoLuo/GAN-BMC `Dirac-GAN/`, pinned and driven by
tests/bench/dirac_authors_table.py) against ganpatch.dirac.

Fed with the (b1, b2) their run drew, our simulator follows their trajectory to float32 rounding and converges at
the same iteration; so every table of ganpatch.dirac is a table of their code. Their archive comes from the ganpatch
cache or $GANPATCH_MIRROR (never the network); without it these tests fail, or skip with GANPATCH_ALLOW_SKIP=1.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ganpatch import dirac

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / 'tests' / 'bench' / 'dirac_authors_table.py'
_spec = importlib.util.spec_from_file_location('dirac_authors_table', BENCH)
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

FLOAT32_DEVIATION = 1e-4  # Their float32 trajectories against our float64 ones, relative to ||X||.


@pytest.fixture(scope='module')
def authors(tmp_path_factory, missing_upstream):
    try:
        folder = harness.extract_authors_package(tmp_path_factory.mktemp('gan-bmc'))
    except harness.MissingAuthorsCode as exc:
        missing_upstream(str(exc))
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Scalar ops: threads only add overhead.
    with harness.AuthorsDiracGAN(folder) as code:
        yield code
    torch.set_num_threads(threads)
    assert 'dirac_gan' not in sys.modules


@pytest.mark.parametrize('cell, seeds', [((0.01, 0.01, 2.0), (0, 1)), ((0.01, 1e-4, 1.0), (0,)), ((0.001, 0.01, 1.0), (0,))],
                         ids=['table1-rho1-0.01', 'table2-rho1-0.01', 'their-figure-1-config'])
def test_same_draws_give_the_same_trajectory(authors, cell, seeds):
    """Seed 1 of the first cell blows up (beta = 2: the x^3 term) at iteration 948: their float32 run overflows at the
    iteration where ours leaves float32's range."""
    iterations = 1200
    runs = [authors.run(*cell, seed, iterations) for seed in seeds]
    ours = dirac.simulate([cell], seeds, iterations, record=True, noise=np.stack([run.draws for run in runs]))
    for index, (seed, run) in enumerate(zip(seeds, runs)):
        assert run.trajectory.shape == (iterations + 1, 2) and run.draws.shape == (iterations, 2)
        assert np.unique(run.draws).size == 2 * iterations and np.abs(run.draws).max() < 6  # Fresh N(0, 1) draws.
        path, norm = ours.trajectory[0, index], ours.norms[0, index]
        finite = np.isfinite(run.trajectory).all(1)
        np.testing.assert_array_equal(finite, np.abs(path).max(1) <= np.finfo(np.float32).max)
        calm = norm <= harness.BLOWN_UP
        relative = np.abs(run.trajectory[calm] - path[calm]).max(1) / norm[calm]
        assert relative.max() < FLOAT32_DEVIATION, (seed, relative.max())
        blows_up = (cell, seed) == ((0.01, 0.01, 2.0), 1)
        assert finite.all() != blows_up and calm.all() != blows_up
        if blows_up:
            assert np.argmin(finite) == 948
    comparisons = harness.compare_runs(cell, list(seeds), runs, iterations, 1e-3)
    assert all(comparison.same for comparison in comparisons)


def test_their_runs_converge_where_ours_do_and_slower_than_the_paper(authors):
    """Table 2, rho1 = 0.1, rho2 = 0.01, beta = 1 (paper: 400 iterations), tol 1e-3, their seeds 0-5: each run of
    theirs converges at exactly the iteration ours does on its draws, and none by the paper's 400 (theirs:
    805-2265, median 1494; ours over numpy seeds 0-31: median 1808)."""
    cell, seeds, iterations, tol = (0.1, 0.01, 1.0), list(range(6)), 2500, 1e-3
    comparisons = harness.compare_runs(cell, seeds, [authors.run(*cell, seed, iterations) for seed in seeds],
                                       iterations, tol)
    converged = np.array([comparison.authors for comparison in comparisons])
    assert np.isfinite(converged).all(), converged
    assert all(comparison.same for comparison in comparisons), comparisons
    assert max(comparison.deviation for comparison in comparisons) < FLOAT32_DEVIATION
    assert converged.min() > dirac.PAPER_ITERATIONS[(1.0, 0.1, 0.01)], converged


def test_bench_prints_the_three_way_table(authors, tmp_path):
    """The script end to end (its worker pool, the table, --record), from the same cache or mirror as `authors`."""
    grid = ['--rho1', '0.1', '--rho2', '0.01', '--beta', '2', '--seeds', '2', '--ours-seeds', '4', '--iterations', '1000']
    records = tmp_path / 'records'
    records.mkdir()
    result = subprocess.run([sys.executable, str(BENCH), *grid, '--record', str(records)], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = _table_row(result.stdout, '2     0.1   0.01')
    ours = dirac.simulate([(0.1, 0.01, 2.0)], range(4), 1000).converged  # --short-horizon 10000 > --iterations.
    assert row[3] == '1000' and '2/2,' in row and row[-4] == '700', row  # Both runs as ours on their draws.
    assert f'[{int(np.isfinite(ours).sum())}/4]' in ' '.join(row)
    saved = sorted(path.name for path in records.iterdir())
    assert saved == ['authors_beta2_rho10.1_rho20.01_seed0.npz', 'authors_beta2_rho10.1_rho20.01_seed1.npz']
    with np.load(records / saved[0]) as record:
        assert record['trajectory'].shape == (1001, 2) and record['draws'].shape == (1000, 2)
    replayed = subprocess.run([sys.executable, str(BENCH), *grid, '--replay', str(records)], capture_output=True,
                              text=True, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert _table_row(replayed.stdout, '2     0.1   0.01') == row


def _table_row(output, start):
    rows = [line.split() for line in output.splitlines() if line.startswith(start)]
    assert len(rows) == 1, output
    return rows[0]


def test_missing_archive_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv('GANPATCH_CACHE', str(tmp_path / 'cache'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(harness.MissingAuthorsCode, match=r'GAN-BMC@c3694c7.*GANPATCH_MIRROR'):
        harness.extract_authors_package(tmp_path / 'out', mirror=tmp_path / 'empty')
    assert not (tmp_path / 'out').exists()
    result = subprocess.run([sys.executable, str(BENCH), '--mirror', str(tmp_path / 'empty')], capture_output=True,
                            text=True, env={**os.environ, 'GANPATCH_CACHE': str(tmp_path / 'cache')})
    assert result.returncode == harness.EXIT_NO_SOURCE and result.stderr.startswith('error: ') and not result.stdout
