"""Toy studies of discretization drift: do the modified flows track gradient descent better than the original flow?

Rosca, Wu, Dherin, Barrett, "Discretization Drift in Two-Player Games", ICML 2021 (arXiv 2105.13922), with the
settings of the authors' colab (`dd_two_player_games/colabs/dd_games.ipynb`). Each player is one scalar:
x = 'disc' (loss L1) and y = 'gen' (loss L2), with the field (f, g) = (-dL1/dx, -dL2/dy).
  linear rotational game: L1 = eps x^2/2 - x y, L2 = eps y^2/2 + x y, so f = -eps x + y, g = -x - eps y;
      eps = 0.2 from (0.08, -0.05), and eps = 0.09 from (0.07, -0.09), where simultaneous updates diverge; lr 0.2.
  Dirac-GAN (Mescheder, Geiger, Nowozin, ICML 2018) with the sigmoid loss: D(t) = psi t, G = theta, data at 0;
      L1 = softplus(psi theta) + log 2 (discriminator), L2 = -softplus(psi theta) (saturating generator), so
      f = -s(psi theta) theta, g = s(psi theta) psi with s the logistic sigmoid; lr 0.1 from (psi, theta) = (1, 1).
For scalar players the regularizer gradients grad_p R_p of `ganpatch.drift` are products of the field and its
Jacobian (d(dL1/dy)/dx = -f_y, as second derivatives commute):
  x:  self_norm f_x f,  other_norm g_x g,  other_dot_prod f_y g;     y:  self_norm g_y g,  other_norm f_y f,
      other_dot_prod g_x f.
With coefficients c, player p moves along r_p (F_p - sum_term c_p[term] T_p[term]) in time t = iteration, with
r_p its learning rate: c = 0 is the original flow, c = `drift.drift_coefficients` the modified flow, and Euler
steps with c = the regularizer coefficients are gradient descent with the explicit regularizer. The flows are
integrated with SciPy's RK45 (rtol 1e-10); distance = ||Euler iterate k - flow at t = k||, averaged over k.

CLI:  python -m ganpatch.drift_study [--figure OUT.png]
"""

import argparse
import dataclasses
import os
import sys
from typing import Callable

import numpy as np

from ganpatch import drift


@dataclasses.dataclass(frozen=True)
class Game:
    """A two-player game of scalars: field(v) = (f, g) and jacobian(v) = [[f_x, f_y], [g_x, g_y]]."""
    name: str
    field: Callable[[np.ndarray], np.ndarray]
    jacobian: Callable[[np.ndarray], np.ndarray]


def linear_game(eps):
    a = np.array([[-eps, 1.0], [-1.0, -eps]])
    return Game(f'linear game, ε = {eps:g}', lambda v: a @ v, lambda v: a)


def _sigmoid(t):
    return 0.5 * (1 + np.tanh(0.5 * t))


def dirac_game():
    def field(v):
        psi, theta = v
        s = _sigmoid(psi * theta)
        return np.array([-s * theta, s * psi])

    def jacobian(v):
        psi, theta = v
        s = _sigmoid(psi * theta)
        ds = s * (1 - s)
        mixed = s + ds * psi * theta
        return np.array([[-ds * theta ** 2, -mixed], [mixed, ds * psi ** 2]])
    return Game('Dirac-GAN, sigmoid loss', field, jacobian)


def regularizer_gradients(game, v):
    """{player: (self_norm, other_norm, other_dot_prod) gradients} at v (module docstring)."""
    (f, g), ((fx, fy), (gx, gy)) = game.field(v), game.jacobian(v)
    return {'disc': np.array([fx * f, gx * g, fy * g]), 'gen': np.array([gy * g, fy * f, gx * f])}


def regularized_field(game, coefficients=None):
    """v -> (F_p - sum_term c_p[term] T_p[term]) per player, for coefficients {player: drift.Terms} (None: F)."""
    if coefficients is None:
        return game.field
    c = {p: np.array(coefficients[p].values()) for p in drift.PLAYERS}

    def field(v):
        terms = regularizer_gradients(game, v)
        return game.field(v) - np.array([c[p] @ terms[p] for p in drift.PLAYERS])
    return field


def euler(game, start, lrs, iterations, *, update='simultaneous', first='disc', steps=(1, 1), coefficients=None):
    """Gradient descent iterates [iterations + 1, 2] with learning rates lrs = (lr_disc, lr_gen); alternating
    rounds take steps[p] steps of player p, `first` first; `coefficients` adds the explicit regularizer."""
    field = regularized_field(game, coefficients)
    v = np.array(start, dtype=np.float64)
    order = [drift.PLAYERS.index(first), 1 - drift.PLAYERS.index(first)]
    path = [v.copy()]
    for _ in range(iterations):
        if update == 'simultaneous':
            v = v + np.asarray(lrs) * field(v)
        else:
            for index in order:
                for _ in range(steps[index]):
                    v[index] += lrs[index] * field(v)[index]
        path.append(v.copy())
    return np.array(path)


def flow(game, start, rates, iterations, coefficients=None):
    """The flow v' = rates * regularized field at t = 0..iterations, [iterations + 1, 2] (SciPy RK45)."""
    from scipy.integrate import solve_ivp

    field = regularized_field(game, coefficients)
    times = np.arange(iterations + 1, dtype=np.float64)
    solution = solve_ivp(lambda t, v: np.asarray(rates) * field(v), (0.0, times[-1]), np.asarray(start, dtype=np.float64),
                         t_eval=times, method='RK45', rtol=1e-10, atol=1e-13)
    if not solution.success:
        raise RuntimeError(f'RK45 failed on {game.name}: {solution.message}')
    return solution.y.T


def mean_distance(path, reference):
    return float(np.mean(np.linalg.norm(path[1:] - reference[1:], axis=1)))


#----------------------------------------------------------------------------
# The study.

@dataclasses.dataclass(frozen=True)
class Setting:
    game: Game
    start: tuple
    lr: float
    iterations: dict # {update: iterations}, the colab's horizons.


SETTINGS = (
    Setting(linear_game(0.2), (0.08, -0.05), 0.2, {'simultaneous': 500, 'alternating': 500}),
    Setting(linear_game(0.09), (0.07, -0.09), 0.2, {'simultaneous': 45, 'alternating': 500}),
    Setting(dirac_game(), (1.0, 1.0), 0.1, {'simultaneous': 1000, 'alternating': 1000}),
)


@dataclasses.dataclass
class Panel:
    """One game and update: the paths [iterations + 1, 2] and their distances."""
    setting: Setting
    update: str
    paths: dict
    distances: dict


def run_panel(setting, update):
    """Euler iterates, the original and modified flows, and Euler with the drift-cancelling regularizer
    (cancel-interaction) next to its own modified flow (the self terms that remain)."""
    lr, iterations = setting.lr, setting.iterations[update]
    lrs = (lr, lr)
    schedule = dict(update=update, first='disc')
    drift_coeffs = drift.drift_coefficients(lr, lr, **schedule)
    cancel = drift.preset_coefficients('cancel-interaction', lr_disc=lr, lr_gen=lr, **schedule)
    remaining = drift.combine(drift_coeffs, drift.Terms(1.0, 1.0, 1.0), cancel) # Drift + regularizer: self terms.
    run = lambda **kw: euler(setting.game, setting.start, lrs, iterations, **schedule, **kw)
    along = lambda coefficients: flow(setting.game, setting.start, lrs, iterations, coefficients)
    paths = {'euler': run(), 'original flow': along(None), 'modified flow': along(drift_coeffs),
             'euler + cancel-interaction': run(coefficients=cancel), 'its modified flow': along(remaining)}
    distances = {
        'Euler ~ original flow': mean_distance(paths['euler'], paths['original flow']),
        'Euler ~ modified flow': mean_distance(paths['euler'], paths['modified flow']),
        'Euler + cancel-interaction ~ original flow': mean_distance(paths['euler + cancel-interaction'], paths['original flow']),
        'Euler + cancel-interaction ~ its modified flow': mean_distance(paths['euler + cancel-interaction'], paths['its modified flow']),
    }
    return Panel(setting, update, paths, distances)


def run_study():
    return [run_panel(setting, update) for setting in SETTINGS for update in drift.UPDATES]


# Unequal learning rates: linear game, eps = 0.2, from (0.08, -0.05), 200 rounds.
LEARNING_RATE_CASES = (((0.2, 0.1), 'simultaneous', (1, 1)), ((0.2, 0.1), 'alternating', (1, 1)),
                       ((0.05, 0.2), 'simultaneous', (1, 1)), ((0.05, 0.2), 'alternating', (1, 1)),
                       ((0.1, 0.1), 'alternating', (3, 1)))


def learning_rate_study(iterations=200):
    """[(lrs, update, steps, {flow: mean distance to the Euler iterates})] for the paper's and the common-clock
    coefficients, where the players' per-round learning rates differ."""
    game, start = linear_game(0.2), (0.08, -0.05)
    rows = []
    for lrs, update, steps in LEARNING_RATE_CASES:
        path = euler(game, start, lrs, iterations, update=update, steps=steps)
        rates = (steps[0] * lrs[0], steps[1] * lrs[1])
        distances = {'original': mean_distance(path, flow(game, start, rates, iterations))}
        for convention in drift.CONVENTIONS:
            coeffs = drift.drift_coefficients(*lrs, update=update, disc_steps=steps[0], gen_steps=steps[1],
                                              convention=convention)
            distances[convention] = mean_distance(path, flow(game, start, rates, iterations, coeffs))
        rows.append((lrs, update, steps, distances))
    return rows


def report(panels, learning_rate_rows, log=print):
    log('Mean distance between the gradient-descent iterates and each flow (||v_k - v(t = k)||, k = 1..K; '
        'flows by RK45, rtol 1e-10)')
    for panel in panels:
        s = panel.setting
        order = ' (disc first)' if panel.update == 'alternating' else ''
        log(f'\n{s.game.name}, {panel.update} updates{order}, lr {s.lr:g}, start {s.start}, '
            f'K = {s.iterations[panel.update]}:')
        d = panel.distances
        for name, value in d.items():
            log(f'  {name:48s} {value:9.3e}')
        log(f'  -> the modified flow is {d["Euler ~ original flow"] / d["Euler ~ modified flow"]:.1f}x closer to the '
            f'iterates than the original flow; final ||v||: Euler {np.linalg.norm(panel.paths["euler"][-1]):.3g}, '
            f'Euler + cancel-interaction {np.linalg.norm(panel.paths["euler + cancel-interaction"][-1]):.3g}')
    log('\nUnequal learning rates (linear game, ε = 0.2, from (0.08, -0.05), 200 rounds): mean distance of the '
        'iterates to the modified flow with the paper\'s and with the common-clock drift coefficients')
    log(f'  {"lr (disc, gen)":16s} {"update":13s} {"steps":7s} {"original":>10s} {"paper":>10s} {"common-clock":>13s}')
    for lrs, update, steps, d in learning_rate_rows:
        log(f'  {str(lrs):16s} {update:13s} {str(steps):7s} {d["original"]:10.2e} {d["paper"]:10.2e} '
            f'{d["common-clock"]:13.2e}')


PATH_STYLE = {
    'original flow': dict(color='black', lw=1.4, label='original flow'),
    'modified flow': dict(color='tab:green', lw=1.6, ls='--', label='modified flow'),
    'euler': dict(color='tab:orange', lw=0.5, marker='.', ms=3, label='gradient descent (Euler) iterates'),
    'euler + cancel-interaction': dict(color='tab:blue', lw=0.7, label='gradient descent + cancel-interaction regularizer'),
}
DISTANCE_STYLE = {  # (iterates, flow): style of ||iterate k - flow(k)||
    ('euler', 'original flow'): dict(color='black', lw=1.0, label='iterates ~ original flow'),
    ('euler', 'modified flow'): dict(color='tab:green', lw=1.0, label='iterates ~ modified flow'),
    ('euler + cancel-interaction', 'original flow'): dict(color='tab:blue', lw=0.8, ls=':', label='+ cancel-interaction ~ original flow'),
    ('euler + cancel-interaction', 'its modified flow'): dict(color='tab:blue', lw=0.8, ls='--', label='+ cancel-interaction ~ its modified flow'),
}


def plot(panels, path):
    """Per game (row) and update: the paths in the plane, and the distance of the iterates to each flow."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(22, 15))
    axes = fig.subplots(len(SETTINGS), 2 * len(drift.UPDATES))
    for index, panel in enumerate(panels):
        s = panel.setting
        order = ' (disc first)' if panel.update == 'alternating' else ''
        phase, distance = axes.flat[2 * index], axes.flat[2 * index + 1]
        for name, style in PATH_STYLE.items():
            phase.plot(panel.paths[name][:, 0], panel.paths[name][:, 1], **style)
        phase.plot(*s.start, 'o', color='tab:red', ms=7, label='start')
        phase.plot(0, 0, '*', color='black', ms=11, label='equilibrium')
        _frame(phase, panel)
        phase.xaxis.set_major_locator(MaxNLocator(5))
        phase.set_title(f'{s.game.name}: {panel.update}{order}, lr {s.lr:g}, {s.iterations[panel.update]} iterations',
                        fontsize=10)
        for (iterates, reference), style in DISTANCE_STYLE.items():
            gap = np.linalg.norm(panel.paths[iterates] - panel.paths[reference], axis=1)[1:]
            style = dict(style, label=f'{style["label"]}: mean {gap.mean():.2e}')
            distance.semilogy(np.arange(1, len(gap) + 1), np.maximum(gap, 1e-12), **style)
        distance.set_xlabel('iteration k')
        distance.set_ylabel('||v_k - v(t = k)||')
        distance.set_title('distance of the iterates to each flow', fontsize=10)
        distance.legend(loc='lower right', fontsize=8, framealpha=0.85)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='upper center', ncol=len(labels), fontsize=11, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=80)


def _frame(ax, panel):
    """Axes that show the original flow and the iterates (a divergent run is cut at 3x the flow's extent)."""
    reference = np.concatenate([panel.paths['original flow'], panel.paths['modified flow']])
    extent = 1.25 * np.abs(reference).max()
    shown = np.concatenate([panel.paths[name] for name in PATH_STYLE])
    extent = min(max(extent, 1.1 * np.abs(shown[np.isfinite(shown)]).max()), 3 * extent)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect('equal')
    names = ('ψ (discriminator)', 'θ (generator)') if 'Dirac' in panel.setting.game.name else ('x (disc)', 'y (gen)')
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.axhline(0, color='0.85', lw=0.5, zorder=0)
    ax.axvline(0, color='0.85', lw=0.5, zorder=0)


#----------------------------------------------------------------------------
# Command line.

def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m ganpatch.drift_study', description=__doc__.split('\n\n')[0])
    parser.add_argument('--figure', metavar='PNG', help='also draw every panel into this PNG')
    args = parser.parse_args(argv)
    if args.figure is not None:
        if not args.figure.lower().endswith('.png'):
            parser.error(f'--figure writes a PNG; give a path ending in .png, got {args.figure!r}')
        folder = os.path.dirname(os.path.abspath(args.figure))
        if not os.path.isdir(folder):
            parser.error(f'--figure: the folder {folder!r} does not exist')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    panels = run_study()
    report(panels, learning_rate_study())
    if args.figure is not None:
        plot(panels, args.figure)
        print(f'\nWrote {args.figure}')


if __name__ == '__main__':
    main()
