"""Dirac-GAN with the Brownian Motion Controller: reproduces BrGANs Figure 1 and Tables 1-2.

Luo, Zhu, Chen, Zhu, "Stabilizing GANs' Training with Brownian Motion Controller", ICML 2023 (arXiv 2306.10468).
Dirac-GAN (Mescheder, Geiger, Nowozin, ICML 2018): the generator is p_G = delta(x - theta), the discriminator
D(x) = phi x, the data point c = 0, so X = (phi, theta - c) = (phi, theta) and the equilibrium is X = 0.

Losses (D maximizes its objective, G minimizes its loss):
  wgan: D: phi (c - theta);                  G: -phi theta            field (phi', theta') = (-theta, phi)
  ns:   D: log s(phi c) + log s(-phi theta); G: -log s(phi theta)     field = (-theta s(phi theta), phi s(-phi theta))
with s the logistic sigmoid (ns = the non-saturating generator loss).

Each iteration does one SGD step of both players with learning rate lr (alternating: G first, then D at the new
theta, as the authors did; or simultaneous), then adds the controller of the paper's controlled Dirac-GAN (eq. 7),
dX = f(X) dt + rho1 X dB1 + rho2 |X|^beta X dB2, with X the pre-update value and one (b1, b2) per iteration
shared by both coordinates:
  scheme 'authors':        x_i += rho1 x_i b1 - rho2 |x_i|^beta x_i b2 for x_i in (phi, theta), b1, b2 ~ N(0, 1):
                           the authors' Dirac-GAN code (GAN-BMC `Dirac-GAN/dirac_gan/model_wrapper.py`), which takes
                           |.| per coordinate and does not scale the increments by sqrt(lr)
  scheme 'euler-maruyama': X += rho1 X dB1 + rho2 |X|^beta X dB2, |X| the Euclidean norm, dB ~ N(0, dt), dt = lr
"Converged" = the first iteration after which ||X|| stays below `tol` until the end of the run (the paper states
no tolerance). Seeds give common random numbers: seed s drives the same increments in every configuration.

CLI:  python -m ganpatch.dirac --figure OUT.png    python -m ganpatch.dirac --table [options]
"""

import argparse
import math
import sys
import time
from typing import NamedTuple

import numpy as np

LOSSES = ('wgan', 'ns')
UPDATES = ('alternating', 'simultaneous')
SCHEMES = ('authors', 'euler-maruyama')

# BrGANs Tables 1 (beta = 2) and 2 (beta = 1): iterations to converge; None = "> 100000".
PAPER_ITERATIONS = {
    (2.0, 0.1, 1e-4): 1500, (2.0, 0.1, 1e-3): 750, (2.0, 0.1, 1e-2): 700,
    (2.0, 0.01, 1e-4): None, (2.0, 0.01, 1e-3): 9000, (2.0, 0.01, 1e-2): 8500,
    (2.0, 0.001, 1e-4): None, (2.0, 0.001, 1e-3): None, (2.0, 0.001, 1e-2): None,
    (1.0, 0.1, 1e-4): 600, (1.0, 0.1, 1e-3): 400, (1.0, 0.1, 1e-2): 400,
    (1.0, 0.01, 1e-4): 25000, (1.0, 0.01, 1e-3): 15000, (1.0, 0.01, 1e-2): 10000,
    (1.0, 0.001, 1e-4): None, (1.0, 0.001, 1e-3): None, (1.0, 0.001, 1e-2): 40000,
}
PAPER_HORIZON = 100000
_BLOCK = 4096 # Iterations of increments drawn at a time.


def brownian_increments(seed, count):
    """The first `count` standard normal (b1, b2) of `seed`, shape [count, 2]: numpy's default_rng(seed).

    A simulation draws them block by block from the same generator, which yields the same numbers, so a seed's
    increments do not depend on how many iterations, configurations or other seeds a run has."""
    return np.random.default_rng(seed).standard_normal((count, 2))


class DiracRuns(NamedTuple):
    """Result of `simulate`, indexed [config, seed] (and iteration k = 0..iterations for the recorded arrays)."""
    converged: np.ndarray          # First iteration after which ||X|| < tol to the end; np.inf if not (or diverged).
    first_below: np.ndarray        # First iteration with ||X|| < tol (np.inf if none): shows how much the
                                   # "stays below" definition adds.
    norms: np.ndarray = None       # ||X_k||, with record=True.
    trajectory: np.ndarray = None  # X_k = (phi_k, theta_k), with record=True.


def _sigmoid(t):
    return 0.5 * (1 + np.tanh(0.5 * t))


def _sgd_step(phi, theta, lr, loss, update):
    """One SGD step of both players (the drift part of the SDE, dt = lr)."""
    if loss == 'wgan':
        theta_next = theta + lr * phi
        phi_next = phi - lr * (theta_next if update == 'alternating' else theta)
    else:
        theta_next = theta + lr * phi * _sigmoid(-phi * theta)
        theta_d = theta_next if update == 'alternating' else theta
        phi_next = phi - lr * theta_d * _sigmoid(phi * theta_d)
    return phi_next, theta_next


def simulate(configs, seeds, iterations, *, lr=0.1, loss='wgan', update='alternating', scheme='authors', tol=1e-3,
             start=(1.0, 1.0), record=False, noise=None):
    """Run every (rho1, rho2, beta) in `configs` for every seed, vectorized over both.

    Returns a `DiracRuns`. converged[c, s] is the first iteration after which ||X|| stays below `tol` (np.inf if
    ||X|| is not below tol at the end, or the run diverged). With `record`, also ||X_k|| and X_k for k = 0..iterations.
    Without `record` the run stops early once every ||X|| < 1e-6 tol (with the controller's multiplicative noise,
    a return above tol from there has probability ~1e-6).
    `noise`, shape [len(seeds), iterations, 2]: standard normal (b1, b2) of each seed and iteration to use instead
    of the seeds' own draws (for example another program's); the scheme scales them as its own.
    """
    _check_choice('loss', loss, LOSSES)
    _check_choice('update', update, UPDATES)
    _check_choice('scheme', scheme, SCHEMES)
    configs, seeds = np.asarray(configs, dtype=np.float64).reshape(-1, 3), list(seeds)
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != (len(seeds), iterations, 2):
            raise ValueError(f'noise has shape {noise.shape}; expected (seeds, iterations, 2) = {(len(seeds), iterations, 2)}')
    rows = len(configs) * len(seeds)
    rho1, rho2, beta = (np.repeat(configs[:, i], len(seeds)) for i in range(3))
    noise_scale = 1.0 if scheme == 'authors' else math.sqrt(lr)
    sign2 = -1.0 if scheme == 'authors' else 1.0
    phi, theta = np.full(rows, float(start[0])), np.full(rows, float(start[1]))
    last_above = np.zeros(rows) # Iteration 0 is above tol: checked below.
    first_below = np.full(rows, np.inf)
    if math.hypot(*start) < tol:
        raise ValueError(f'The start {start} is already within tol = {tol}')
    if record:
        trajectory = np.empty((iterations + 1, rows, 2))
        trajectory[0, :, 0], trajectory[0, :, 1] = phi, theta
    with np.errstate(over='ignore', invalid='ignore'):
        generators = [np.random.default_rng(seed) for seed in seeds] # As brownian_increments().
        for block_start in range(0, iterations, _BLOCK):
            count = min(_BLOCK, iterations - block_start)
            if noise is None:
                increments = np.stack([rng.standard_normal((count, 2)) for rng in generators], axis=1) # [count, seeds, 2]
            else:
                increments = noise[:, block_start:block_start + count].transpose(1, 0, 2)
            increments = np.tile(increments * noise_scale, (1, len(configs), 1)) # Row = config * len(seeds) + seed.
            for k in range(count):
                b1, b2 = increments[k, :, 0], increments[k, :, 1]
                if scheme == 'authors': # |.| of each coordinate.
                    gain_phi = rho1 * b1 + sign2 * rho2 * np.abs(phi) ** beta * b2
                    gain_theta = rho1 * b1 + sign2 * rho2 * np.abs(theta) ** beta * b2
                else: # Euclidean norm of X.
                    gain_phi = gain_theta = rho1 * b1 + sign2 * rho2 * np.sqrt(phi * phi + theta * theta) ** beta * b2
                phi_next, theta_next = _sgd_step(phi, theta, lr, loss, update)
                phi, theta = phi_next + gain_phi * phi, theta_next + gain_theta * theta
                iteration = block_start + k + 1
                norm = np.sqrt(phi * phi + theta * theta)
                below = norm < tol # NaN / inf count as above.
                last_above[~below] = iteration
                first_below[below & (first_below == np.inf)] = iteration
                if record:
                    trajectory[iteration, :, 0], trajectory[iteration, :, 1] = phi, theta
            if not record and np.all((norm < 1e-6 * tol) | ~np.isfinite(norm)):
                break
    final = np.sqrt(phi * phi + theta * theta)
    shape = (len(configs), len(seeds))
    converged = np.where(final < tol, last_above + 1, np.inf).reshape(shape)
    if not record:
        return DiracRuns(converged, first_below.reshape(shape))
    trajectory = trajectory.transpose(1, 0, 2).reshape(shape + (iterations + 1, 2))
    with np.errstate(over='ignore', invalid='ignore'): # Diverged runs: inf / NaN norms.
        norms = np.sqrt((trajectory ** 2).sum(-1))
    return DiracRuns(converged, first_below.reshape(shape), norms, trajectory)


def convergence_iterations(norms, tol):
    """(converged, first_below) of recorded runs, as `simulate` defines them: `norms` holds ||X_k|| for
    k = 0..K on its last axis (any other program's trajectories, e.g. the authors' code's). converged is the first
    iteration after which ||X|| stays below `tol` through K (np.inf if ||X_K|| is not below tol or not finite);
    first_below is the first k with ||X_k|| < tol (np.inf if none)."""
    norms = np.asarray(norms, dtype=np.float64)
    below = norms < tol # NaN / inf count as above.
    last_above = norms.shape[-1] - 1 - np.argmax(~below[..., ::-1], axis=-1)
    converged = np.where(~below.any(-1) | ~below[..., -1], np.inf, np.where(below.all(-1), 0, last_above + 1))
    first_below = np.where(below.any(-1), np.argmax(below, axis=-1), np.inf)
    return converged, first_below


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'Unknown {name} {value!r}; expected one of {", ".join(choices)}')


#----------------------------------------------------------------------------
# Table: our medians next to the paper's Tables 1-2.

def format_iterations(value, horizon):
    return f'>{horizon}' if not math.isfinite(value) else str(int(value))


def convergence_table(rho1s, rho2s, betas, seeds, iterations, *, lr=0.1, loss='wgan', update='alternating', scheme='authors',
                      tol=1e-3, log=print):
    """Simulate the grid and print, per beta, our median iterations next to the paper's. Returns the medians
    {(beta, rho1, rho2): median} (np.inf when at most half of the seeds converged)."""
    configs = [(rho1, rho2, beta) for beta in betas for rho1 in rho1s for rho2 in rho2s]
    started = time.monotonic()
    runs = simulate(configs, seeds, iterations, lr=lr, loss=loss, update=update, scheme=scheme, tol=tol)
    medians = {}
    log(f'Dirac-GAN + BMC: iterations until ||X|| stays below tol = {tol:g} (median over {len(seeds)} seeds: '
        f'{_describe_seeds(seeds)}; >{iterations} = not within the {iterations} simulated iterations)')
    log(f'loss={loss}, update={update}, scheme={scheme}, lr={lr:g}, start (phi, theta) = (1, 1), data point c = 0. '
        f'Cell: ours (median first iteration below tol) [seeds converged] | paper (>{PAPER_HORIZON} there = not within {PAPER_HORIZON}).')
    for beta in betas:
        header = [f'beta = {beta:g}'] + [f'rho2 = {rho2:g}' for rho2 in rho2s]
        lines = [header]
        for rho1 in rho1s:
            cells = [f'rho1 = {rho1:g}']
            for rho2 in rho2s:
                row = runs.converged[configs.index((rho1, rho2, beta))]
                median = float(np.median(row))
                first = format_iterations(float(np.median(runs.first_below[configs.index((rho1, rho2, beta))])), iterations)
                medians[(beta, rho1, rho2)] = median
                paper = PAPER_ITERATIONS.get((float(beta), float(rho1), float(rho2)), 'n/a') if loss == 'wgan' else 'n/a' # The paper's tables are WGAN.
                paper = f'>{PAPER_HORIZON}' if paper is None else str(paper)
                cells.append(f'{format_iterations(median, iterations)} ({first}) [{int(np.isfinite(row).sum())}/{len(seeds)}] | {paper}')
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        log('')
        for line in lines:
            log('  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    log(f'\n({len(configs)} configurations x {len(seeds)} seeds in {time.monotonic() - started:.1f} s)')
    return medians


def _describe_seeds(seeds):
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f'{seeds[0]}..{seeds[-1]}'
    return ','.join(map(str, seeds))


#----------------------------------------------------------------------------
# Figure 1 analogue: trajectories over the gradient vector field, without and with BMC.

def plot_figure(path, *, rho1=0.1, rho2=0.01, beta=1.0, iterations=3000, seed=0, lr=0.1, loss='wgan', update='alternating',
                scheme='authors', tol=1e-3):
    """Write a PNG with three panels: the SGD trajectory without BMC and with BMC on the vector field over
    [-2, 2]^2 (theta on x, phi on y, as in the paper), and ||X_k|| of both over the iterations."""
    from matplotlib.figure import Figure

    converged, _, norms, paths = simulate([(0.0, 0.0, beta), (rho1, rho2, beta)], [seed], iterations, lr=lr, loss=loss,
        update=update, scheme=scheme, tol=tol, record=True)
    fig = Figure(figsize=(16, 5))
    axes = fig.subplots(1, 3)
    grid = np.linspace(-2, 2, 21)
    theta_grid, phi_grid = np.meshgrid(grid, grid)
    phi_dot, theta_dot = _sgd_step(phi_grid, theta_grid, 1.0, loss, 'simultaneous') # The field f(X) itself.
    titles = ['without BMC', f'with BMC (rho1 = {rho1:g}, rho2 = {rho2:g}, beta = {beta:g})']
    for ax, path_xy, title in zip(axes[:2], paths[:, 0], titles):
        ax.quiver(theta_grid, phi_grid, theta_dot - theta_grid, phi_dot - phi_grid, color='0.6', angles='xy')
        ax.plot(path_xy[:, 1], path_xy[:, 0], color='tab:blue', lw=0.8)
        ax.plot(path_xy[0, 1], path_xy[0, 0], 'o', color='tab:green', label='start (1, 1)')
        ax.plot(path_xy[-1, 1], path_xy[-1, 0], 's', color='tab:red', label=f'after {iterations} iterations')
        ax.plot(0, 0, '*', color='black', ms=12, label='equilibrium')
        ax.set_xlim(-2, 2)
        ax.set_ylim(-2, 2)
        ax.set_aspect('equal')
        ax.set_xlabel('θ (generator)')
        ax.set_ylabel('φ (discriminator)')
        ax.set_title(f'Dirac-GAN, {loss}, {update} SGD lr {lr:g}: {title}', fontsize=9)
        ax.legend(loc='lower left', fontsize=8)
    for norm, label, color in [(norms[0, 0], 'without BMC', 'tab:orange'), (norms[1, 0], titles[1], 'tab:blue')]:
        axes[2].semilogy(np.maximum(norm, 1e-300), label=label, color=color, lw=0.8)
    axes[2].axhline(tol, color='black', ls='--', lw=0.8, label=f'tol = {tol:g}')
    status = format_iterations(converged[1, 0], iterations)
    axes[2].set_title(f'||X_k|| (scheme {scheme}, seed {seed}); with BMC converged at {status}', fontsize=9)
    axes[2].set_xlabel('iteration')
    axes[2].set_ylim(max(1e-8, np.nanmin(norms) / 3), max(10, np.nanmax(norms[np.isfinite(norms)]) * 3))
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return converged[1, 0]


#----------------------------------------------------------------------------
# Command line.

def _float_list(text):
    try:
        values = [float(item) for item in text.split(',') if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}')
    if not values or any(value < 0 or not math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers >= 0, got {text!r}')
    return values


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f'must be > 0, got {text!r}')
        return value
    return parse


def parse_args(argv, prog='python -m ganpatch.dirac'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--figure', metavar='PNG', help='write the Figure 1 analogue to this PNG')
    parser.add_argument('--table', action='store_true', help='print the Tables 1-2 analogue next to the paper')
    sim = parser.add_argument_group('simulation (both outputs)')
    sim.add_argument('--loss', choices=LOSSES, default='wgan', help='wgan, or ns (non-saturating G)')
    sim.add_argument('--update', choices=UPDATES, default='alternating', help='SGD order (alternating: G, then D)')
    sim.add_argument('--scheme', choices=SCHEMES, default='authors', help='BMC noise: authors = b ~ N(0, 1) unscaled; euler-maruyama = dB ~ N(0, lr)')
    sim.add_argument('--lr', type=_positive(float), default=0.1, help='SGD learning rate (= dt)')
    sim.add_argument('--tol', type=_positive(float), default=1e-3, help='convergence tolerance on ||X||')
    table = parser.add_argument_group('table')
    table.add_argument('--rho1', type=_float_list, default=[0.1, 0.01, 0.001], metavar='LIST', help='comma-separated rho1 values')
    table.add_argument('--rho2', type=_float_list, default=[1e-4, 1e-3, 1e-2], metavar='LIST', help='comma-separated rho2 values')
    table.add_argument('--beta', type=_float_list, default=[2.0, 1.0], metavar='LIST', help='comma-separated beta values')
    table.add_argument('--seeds', type=_positive(int), default=32, help='number of seeds')
    table.add_argument('--seed', type=int, default=0, help='first seed')
    table.add_argument('--iterations', type=_positive(int), default=PAPER_HORIZON, help='iterations simulated per run')
    figure = parser.add_argument_group('figure')
    figure.add_argument('--fig-rho1', type=float, default=0.1, help='rho1 of the BMC panel (the authors\' Fig. 1 used 0.001)')
    figure.add_argument('--fig-rho2', type=float, default=0.01, help='rho2 of the BMC panel')
    figure.add_argument('--fig-beta', type=float, default=1.0, help='beta of the BMC panel')
    figure.add_argument('--fig-iterations', type=_positive(int), default=3000, help='iterations drawn')
    figure.add_argument('--fig-seed', type=int, default=0, help='seed of the BMC increments')
    args = parser.parse_args(argv)
    if args.figure is None and not args.table:
        parser.error('nothing to do: give --figure PNG and/or --table')
    if args.figure is not None and not args.figure.lower().endswith('.png'):
        parser.error(f'--figure writes a PNG; give a path ending in .png, got {args.figure!r}')
    return args


def main(argv=None, prog='python -m ganpatch.dirac'):
    """The command line; `prog` names the command in usage and errors (a tree's own script passes its name)."""
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    common = dict(lr=args.lr, loss=args.loss, update=args.update, scheme=args.scheme, tol=args.tol)
    if args.table:
        seeds = list(range(args.seed, args.seed + args.seeds))
        convergence_table(args.rho1, args.rho2, args.beta, seeds, args.iterations, **common)
    if args.figure is not None:
        converged = plot_figure(args.figure, rho1=args.fig_rho1, rho2=args.fig_rho2, beta=args.fig_beta,
            iterations=args.fig_iterations, seed=args.fig_seed, **common)
        print(f'Wrote {args.figure} (with BMC: converged at iteration {format_iterations(converged, args.fig_iterations)})')


if __name__ == '__main__':
    main()
