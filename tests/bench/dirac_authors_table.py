"""The authors' own Dirac-GAN code next to ganpatch.dirac and the paper's Tables 1-2 (BrGANs, Luo et al., ICML 2023).

Run by hand (minutes to hours: the authors' loop does one PyTorch step per iteration):

    GANPATCH_MIRROR=../shared/upstreams python tests/bench/dirac_authors_table.py [--seeds 8] [--workers 2]

For every table cell (rho1, rho2, beta) and every seed s, it runs the authors' Dirac-GAN code with their
configuration and that cell's rho1, rho2, beta, seeded with torch.manual_seed(s), and prints, per cell:
- authors: their iterations to converge, the median over their seeds, with the fraction converged;
- same draws: ganpatch.dirac fed with the very (b1, b2) their run drew, and how many runs converge at exactly
  the same iteration as theirs and, when a run blows up (beta = 2), leave float32's range at the same iteration
  (plus the largest deviation of the trajectories, relative to ||X||);
- ours: ganpatch.dirac over its own seeds (numpy), as `python -m ganpatch.dirac --table` prints it;
- paper: the value in its Table 1 (beta = 2) or 2 (beta = 1).
"Converged" is the same for all three columns: the first iteration after which ||X|| stays below --tol until the
end of the run (`ganpatch.dirac.convergence_iterations`).

Where the code comes from: TianjiaoLuo/GAN-BMC's `Dirac-GAN/` folder exists from commit 013baaf on and is unchanged
at the repository's last commit c3694c7, which is pinned here (commit and git tree id). The archive is read
through apply.py's sources (the ganpatch cache, then $GANPATCH_MIRROR or ../shared/upstreams; never the
network), its tree id is verified, and only the `dirac_gan` package's .py files are written to a temporary
folder. Nothing of theirs is copied into this repository, and their files are run unmodified.

How their code is driven (`AuthorsDiracGAN`): their `make_plots.py` builds, per entry of its loss list, a
`ModelWrapper` of `Generator()`, `Discriminator()`, two `torch.optim.SGD(lr=HYPERPARAMETERS["lr"], momentum=0.)`,
the entry's losses, `regularization_loss=None`, `use_brown_motion=True`, and calls `train(instance_noise=False)`.
The BMC entry is "brownian_gan" (WGAN losses); at c3694c7 it is commented out in favour of a WGAN-GP entry, which
does not converge to the equilibrium at all (the gradient penalty pulls |phi| to 1). We build the "brownian_gan"
wrapper the same way and call their train(). The cell's parameters and the iteration count go into their
`HYPERPARAMETERS` dict (the one object every module of theirs reads), and torch's global generator is seeded.
One run-time shim, for recording only: their `model_wrapper` module gets a `torch` that forwards every attribute
to torch and logs what `torch.normal` returns, their (b1, b2) of each iteration. No shim is needed for today's
stack (Python 3.11, torch 2.13): train() runs as is; make_plots.py itself is not run (it would draw with
pyplot and write into their my-images/ folder).
"""

import argparse
import contextlib
import importlib
import multiprocessing
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
for folder in (REPO_ROOT, REPO_ROOT / 'overlays' / 'common'):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from ganpatch import dirac  # noqa: E402
from ganpatch_apply.errors import EXIT_NO_SOURCE, NoSourceError  # noqa: E402  (apply.py's stdlib package)
from ganpatch_apply.fetch import Sources, fetch  # noqa: E402
from ganpatch_apply.pins import Source  # noqa: E402

# TianjiaoLuo/GAN-BMC at its last commit; Dirac-GAN/ (tree f2d45d6c...) is the same since 013baaf, where it was added.
AUTHORS_SOURCE = dict(label="the authors' Dirac-GAN code", repo='https://github.com/TianjiaoLuo/GAN-BMC',
                      commit='c3694c7f3ce9546251b1d4e6451fa04f9d1015fb', tree='80d21e42aeb56a09611a82cfd9d108c6c5e259e6',
                      license='NVIDIA Source Code License (the repository; Dirac-GAN/ states none of its own)')
PACKAGE = 'Dirac-GAN/dirac_gan/'
SHORT_HORIZON_RHO1 = 0.1  # Cells with rho1 >= this run --short-horizon iterations (the paper's values there are <= 1500).


def default_mirror():
    """$GANPATCH_MIRROR, else ../shared/upstreams beside the repository when it exists (as run_tests.sh)."""
    if os.environ.get('GANPATCH_MIRROR'):
        return Path(os.environ['GANPATCH_MIRROR'])
    shared = REPO_ROOT.parent / 'shared' / 'upstreams'
    return shared if shared.is_dir() else None


class MissingAuthorsCode(Exception):
    """No cached or mirrored copy of the pinned GAN-BMC commit."""


def extract_authors_package(dest, mirror=None):
    """Write the authors' `dirac_gan` package (its .py files) from the verified pinned archive into `dest`;
    return the folder to put on sys.path. Raises MissingAuthorsCode when no source holds the commit."""
    pin = Source(**AUTHORS_SOURCE)
    mirror = default_mirror() if mirror is None else Path(mirror)
    try:
        files, origin = fetch(pin, Sources(source=None, mirror=mirror, offline=True), fill_cache=False)
    except NoSourceError as exc:
        raise MissingAuthorsCode(f'the authors\' Dirac-GAN code (GAN-BMC@{pin.commit[:7]}) is not available: '
            f'{exc}; give a mirror holding GAN-BMC-{pin.commit}.tar.gz (or a GAN-BMC git clone) with '
            '$GANPATCH_MIRROR') from exc
    root = Path(dest) / f'GAN-BMC-{pin.commit[:7]}'
    names = [name for name in files if name.startswith(PACKAGE) and name.endswith('.py') and name.count('/') == 2]
    if not names:
        raise RuntimeError(f'{origin} holds no {PACKAGE} package')
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name].data)
    return root / 'Dirac-GAN'


class AuthorsRun(NamedTuple):
    trajectory: np.ndarray  # [iterations + 1, 2]: X_k = (phi, theta) = (D weight, G parameter), k = 0 the start.
    draws: np.ndarray       # [iterations, 2]: their (b1, b2) of each iteration.


class AuthorsDiracGAN(contextlib.AbstractContextManager):
    """The authors' dirac_gan package imported from `folder` (see the module docstring for how it is driven).
    Leaving the context removes their modules from sys.modules and their folder from sys.path."""

    def __init__(self, folder):
        import torch
        self.torch, self.folder = torch, str(folder)
        if 'dirac_gan' in sys.modules:
            raise RuntimeError('a dirac_gan package is already imported')
        sys.path.insert(0, self.folder)
        try:
            self.package = importlib.import_module('dirac_gan')
            self.model_wrapper = importlib.import_module('dirac_gan.model_wrapper')
        except BaseException:
            self.close()
            raise
        self.hyperparameters = self.package.HYPERPARAMETERS

    def close(self):
        for name in [name for name in sys.modules if name == 'dirac_gan' or name.startswith('dirac_gan.')]:
            del sys.modules[name]
        with contextlib.suppress(ValueError):
            sys.path.remove(self.folder)

    def __exit__(self, *exc_info):
        self.close()

    def run(self, rho1, rho2, beta, seed, iterations):
        """Their train() with the "brownian_gan" entry of make_plots.py, this cell and seed; an AuthorsRun."""
        torch, package = self.torch, self.package
        self.hyperparameters.update(training_iterations=int(iterations), rou1=float(rho1), rou2=float(rho2),
                                    beta=float(beta))
        draws = []

        class RecordingTorch(types.ModuleType):
            def __getattr__(self, name):
                return getattr(torch, name)

            @staticmethod
            def normal(*args, **kwargs):
                sample = torch.normal(*args, **kwargs)
                draws.append(sample.item())
                return sample

        generator, discriminator = package.Generator(), package.Discriminator()
        wrapper = package.ModelWrapper(generator=generator, discriminator=discriminator,
            generator_optimizer=torch.optim.SGD(params=generator.parameters(), lr=self.hyperparameters['lr'], momentum=0.),
            discriminator_optimizer=torch.optim.SGD(params=discriminator.parameters(), lr=self.hyperparameters['lr'], momentum=0.),
            generator_loss_function=package.WassersteinGANLossGenerator(),
            discriminator_loss_function=package.WassersteinGANLossDiscriminator(),
            regularization_loss=None, use_brown_motion=True)
        self.model_wrapper.torch = RecordingTorch('torch')
        try:
            torch.manual_seed(seed)
            history = wrapper.train(instance_noise=False)  # [iterations, 2] = (G parameter, D weight) after each.
        finally:
            self.model_wrapper.torch = torch
        if len(draws) != 2 * iterations:
            raise RuntimeError(f'their train() drew {len(draws)} normals in {iterations} iterations; expected 2 each')
        start = [[1.0, 1.0]]  # Their train() sets both weights to 1 first.
        trajectory = np.concatenate([start, history.double().numpy()[:, ::-1]])
        return AuthorsRun(trajectory, np.asarray(draws, dtype=np.float64).reshape(iterations, 2))


class Comparison(NamedTuple):
    """One authors' run against ganpatch.dirac fed with the same (b1, b2)."""
    authors: float             # Their iterations to converge (np.inf: not within the run).
    authors_first_below: float
    ours: float                # ganpatch.dirac's on their draws.
    deviation: float           # max_k |X_k(theirs) - X_k(ours)|_inf / ||X_k(ours)|| while ||X_k(ours)|| <= BLOWN_UP.
    overflow: tuple            # (theirs, ours): first iteration beyond float32's range (np.inf: none).

    @property
    def same(self):
        """Both converge at the same iteration, and any blow-up overflows float32 at the same iteration."""
        return self.authors == self.ours and self.overflow[0] == self.overflow[1]


BLOWN_UP = 1e3  # A run with beta = 2 that passes this explodes within a few iterations (the x^3 term); on the way,
                # the map amplifies float32's rounding, so the deviation is measured below it.


def compare_runs(cell, seeds, runs, iterations, tol):
    """[Comparison] of the authors' runs (AuthorsRun per seed) against ganpatch.dirac fed with their draws."""
    ours = dirac.simulate([cell], seeds, iterations, tol=tol, record=True, noise=np.stack([run.draws for run in runs]))
    comparisons = []
    for index, run in enumerate(runs):
        ours_path, ours_norm = ours.trajectory[0, index], ours.norms[0, index]
        authors_converged, authors_first = dirac.convergence_iterations(np.linalg.norm(run.trajectory, axis=1), tol)
        with np.errstate(invalid='ignore', over='ignore'):
            relative = np.abs(run.trajectory - ours_path).max(1) / ours_norm
            float32_range = np.finfo(np.float32).max
            overflow = (_first(~np.isfinite(run.trajectory).all(1)), _first(~(np.abs(ours_path) <= float32_range).all(1)))
        comparisons.append(Comparison(float(authors_converged), float(authors_first), float(ours.converged[0, index]),
                                      float(np.max(relative[ours_norm <= BLOWN_UP], initial=0.0)), overflow))
    return comparisons


def record_path(record_dir, cell, seed):
    rho1, rho2, beta = cell
    return Path(record_dir) / f'authors_beta{beta:g}_rho1{rho1:g}_rho2{rho2:g}_seed{seed}.npz'


def save_run(record_dir, cell, seed, run):
    """Their trajectory in their own precision (float32) and their draws; written under a temporary name first."""
    path = record_path(record_dir, cell, seed)
    partial = path.with_name(path.stem + '.partial.npz')
    np.savez_compressed(partial, trajectory=run.trajectory.astype(np.float32), draws=run.draws)
    partial.replace(path)


def load_run(record_dir, cell, seed, iterations):
    path = record_path(record_dir, cell, seed)
    try:
        with np.load(path) as record:
            run = AuthorsRun(record['trajectory'].astype(np.float64), record['draws'])
    except OSError as exc:
        raise SystemExit(f'error: cannot read the recorded run {path}: {exc}')
    if run.draws.shape != (iterations, 2):
        raise SystemExit(f'error: {path} holds {len(run.draws)} iterations, not {iterations}')
    return run


def _first(flags):
    return float(np.argmax(flags)) if flags.any() else np.inf


#----------------------------------------------------------------------------
# The grid, in worker processes.

_worker = None


def _init_worker(folder):
    import torch
    torch.set_num_threads(1)
    global _worker
    _worker = AuthorsDiracGAN(folder)


def _run_job(job):
    cell, seed, iterations, tol, record_dir = job
    if record_dir is not None and record_path(record_dir, cell, seed).exists():  # Recorded by an earlier run.
        run = load_run(record_dir, cell, seed, iterations)
    else:
        run = _worker.run(*cell, seed, iterations)
        if record_dir is not None:
            save_run(record_dir, cell, seed, run)
    return cell, seed, compare_runs(cell, [seed], [run], iterations, tol)[0]


def horizon(cell, iterations, short_horizon):
    """Iterations of a cell's runs: --short-horizon for the rho1 >= 0.1 cells (when given and shorter)."""
    return min(short_horizon, iterations) if short_horizon and cell[0] >= SHORT_HORIZON_RHO1 else iterations


def run_authors_grid(folder, cells, seeds, iterations, short_horizon, tol, workers=1, record_dir=None, log=print):
    """{cell: [Comparison per seed]} for the authors' code over the grid."""
    jobs = [(cell, seed, horizon(cell, iterations, short_horizon), tol, record_dir) for cell in cells for seed in seeds]
    jobs.sort(key=lambda job: (job[1], -job[2]))  # Seed by seed (an interrupted run has whole seeds), long runs first.
    results = {cell: {} for cell in cells}
    started = time.monotonic()
    context = multiprocessing.get_context('spawn')  # Each worker imports their package itself.
    with context.Pool(workers, initializer=_init_worker, initargs=(str(folder),)) as pool:
        for done, (cell, seed, comparison) in enumerate(pool.imap_unordered(_run_job, jobs), 1):
            results[cell][seed] = comparison
            cell_horizon = horizon(cell, iterations, short_horizon)
            log(f'  [{done}/{len(jobs)}, {time.monotonic() - started:.0f} s] beta={cell[2]:g} rho1={cell[0]:g} '
                f'rho2={cell[1]:g} seed {seed}: authors {dirac.format_iterations(comparison.authors, cell_horizon)}, '
                f'ours on their draws {dirac.format_iterations(comparison.ours, cell_horizon)}, '
                f'deviation {comparison.deviation:.1e}, float32 overflow at {comparison.overflow}', flush=True)
    return {cell: [results[cell][seed] for seed in seeds] for cell in cells}


def replay_grid(record_dir, cells, seeds, iterations, short_horizon, tol):
    """As run_authors_grid, from the runs a previous --record saved (their code is not run)."""
    results = {}
    for cell in cells:
        cell_horizon = horizon(cell, iterations, short_horizon)
        runs = [load_run(record_dir, cell, seed, cell_horizon) for seed in seeds]
        results[cell] = compare_runs(cell, seeds, runs, cell_horizon, tol)
    return results


#----------------------------------------------------------------------------
# The three-way table.

def summarize(converged, first_below, runs_horizon):
    """'median (median first below) [converged/n]' with simulate's conventions (median inf: at most half converged)."""
    converged, first_below = np.asarray(converged, dtype=float), np.asarray(first_below, dtype=float)
    return (f'{dirac.format_iterations(float(np.median(converged)), runs_horizon)} '
            f'({dirac.format_iterations(float(np.median(first_below)), runs_horizon)}) '
            f'[{int(np.isfinite(converged).sum())}/{len(converged)}]')


def _by_paper(converged, paper, cell_horizon):
    """'k/n' runs converged by the paper's count ('-' where the paper has none or it exceeds the run)."""
    if not isinstance(paper, int) or paper > cell_horizon:
        return '-'
    return f'{int(np.sum(np.asarray(converged) <= paper))}/{len(converged)}'


def three_way_table(results, ours_seeds, iterations, short_horizon, tol, log=print):
    """Print one line per cell: authors | same draws | ours | paper. Returns the lines' cells."""
    cells = list(results)
    ours = {}
    for cell_horizon in {horizon(cell, iterations, short_horizon) for cell in cells}:  # One vectorized run per horizon.
        group = [cell for cell in cells if horizon(cell, iterations, short_horizon) == cell_horizon]
        runs = dirac.simulate(group, ours_seeds, cell_horizon, tol=tol)
        ours.update({cell: (runs.converged[index], runs.first_below[index]) for index, cell in enumerate(group)})
    rows = []
    for cell in cells:
        rho1, rho2, beta = cell
        cell_horizon = horizon(cell, iterations, short_horizon)
        comparisons = results[cell]
        ours_converged, ours_first_below = ours[cell]
        paper = dirac.PAPER_ITERATIONS.get((float(beta), float(rho1), float(rho2)), 'n/a')
        same = sum(c.same for c in comparisons)
        authors = np.array([c.authors for c in comparisons])
        rows.append([f'{beta:g}', f'{rho1:g}', f'{rho2:g}', str(cell_horizon),
                     summarize(authors, [c.authors_first_below for c in comparisons], cell_horizon),
                     f'{same}/{len(comparisons)}, {max(c.deviation for c in comparisons):.0e}',
                     summarize(ours_converged, ours_first_below, cell_horizon),
                     f'>{dirac.PAPER_HORIZON}' if paper is None else str(paper),
                     _by_paper(authors, paper, cell_horizon) + ' | ' + _by_paper(ours_converged, paper, cell_horizon)])
    authors_seeds = len(next(iter(results.values())))
    header = ['beta', 'rho1', 'rho2', 'iterations', f"authors' code ({authors_seeds} torch seeds)",
              'same draws: equal, max dev', f'ganpatch.dirac ({len(ours_seeds)} numpy seeds)', 'paper',
              'converged by paper: authors | ours']
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    log(f'Dirac-GAN + BMC, WGAN, alternating SGD lr 0.1, start (1, 1): iterations until ||X|| stays below tol = {tol:g} '
        f'to the end of the run. Cell: median (median first iteration below tol) [runs converged / runs]; '
        f'>N = not within the N iterations run (the median is >N when at most half converged). The last column counts '
        f'the runs converged by the paper\'s iteration count (about half should be, were the paper\'s value a median).')
    log('')
    for row in [header] + rows:
        log('  '.join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
    return rows


#----------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--seeds', type=dirac._positive(int), default=8, help="authors' runs per cell (torch seeds 0..N-1)")
    parser.add_argument('--ours-seeds', type=dirac._positive(int), default=32, help='ganpatch.dirac seeds per cell (numpy seeds 0..N-1)')
    parser.add_argument('--iterations', type=dirac._positive(int), default=dirac.PAPER_HORIZON, help='iterations per run')
    parser.add_argument('--short-horizon', type=int, default=10000,
                        help=f'iterations for the cells with rho1 >= {SHORT_HORIZON_RHO1:g} (0: --iterations)')
    parser.add_argument('--tol', type=dirac._positive(float), default=1e-3, help='convergence tolerance on ||X||')
    parser.add_argument('--rho1', type=dirac._float_list, default=[0.1, 0.01, 0.001], metavar='LIST')
    parser.add_argument('--rho2', type=dirac._float_list, default=[1e-4, 1e-3, 1e-2], metavar='LIST')
    parser.add_argument('--beta', type=dirac._float_list, default=[2.0, 1.0], metavar='LIST')
    parser.add_argument('--workers', type=dirac._positive(int), default=1, help='processes running the authors\' code')
    parser.add_argument('--mirror', help='mirror holding the GAN-BMC archive (default $GANPATCH_MIRROR or ../shared/upstreams)')
    parser.add_argument('--record', metavar='DIR', help="write each authors' run (trajectory, draws) to DIR/*.npz; "
                        'runs already there are reused (so an interrupted or extended grid resumes)')
    parser.add_argument('--replay', metavar='DIR', help="do not run their code: use the runs --record wrote to DIR")
    args = parser.parse_args(argv)
    if args.short_horizon < 0:
        parser.error('--short-horizon must be >= 0')
    for name in ('record', 'replay'):
        if getattr(args, name) is not None and not Path(getattr(args, name)).is_dir():
            parser.error(f'--{name} {getattr(args, name)!r} is not an existing folder')
    if args.record is not None and args.replay is not None:
        parser.error('give --record or --replay, not both')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cells = [(rho1, rho2, beta) for beta in args.beta for rho1 in args.rho1 for rho2 in args.rho2]
    seeds = list(range(args.seeds))
    if args.replay is not None:
        results = replay_grid(args.replay, cells, seeds, args.iterations, args.short_horizon, args.tol)
        print(f"The authors' runs recorded in {args.replay}:\n")
        three_way_table(results, list(range(args.ours_seeds)), args.iterations, args.short_horizon, args.tol)
        return
    with tempfile.TemporaryDirectory(prefix='gan-bmc-dirac-') as temp:
        try:
            folder = extract_authors_package(temp, args.mirror)
        except MissingAuthorsCode as exc:
            print(f'error: {exc}', file=sys.stderr)
            sys.exit(EXIT_NO_SOURCE)
        started = time.monotonic()
        print(f"Running the authors' code: {len(cells)} cells x {args.seeds} seeds, {args.workers} worker(s)", flush=True)
        results = run_authors_grid(folder, cells, seeds, args.iterations, args.short_horizon,
                                   args.tol, args.workers, args.record)
    print(f"(authors' code: {time.monotonic() - started:.0f} s)\n")
    three_way_table(results, list(range(args.ours_seeds)), args.iterations, args.short_horizon, args.tol)


if __name__ == '__main__':
    main()
