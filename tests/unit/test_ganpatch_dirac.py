"""ganpatch.dirac: the Dirac-GAN simulator (orbit without BMC, convergence with rho1 = 0.1, the discretizations
by hand, the 1/rho1^2 law, given noise, the convergence definition) and its CLI (--table on a reduced grid,
--figure, bad input), also through the stylegan2-ada tree's dirac_gan.py."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ganpatch import dirac

NO_BMC = (0.0, 0.0, 1.0)


def test_wgan_without_bmc_stays_on_an_orbit():
    converged, _, norms, _ = dirac.simulate([NO_BMC], [0], 10000, record=True)
    assert math.isinf(converged[0, 0])
    assert norms[0, 0, 0] == pytest.approx(math.sqrt(2))
    assert 0.95 * math.sqrt(2) < norms.min() and norms.max() < 1.1 * math.sqrt(2) # Alternating SGD: a closed orbit.


def test_simultaneous_wgan_spirals_out_at_the_exact_rate():
    norms = dirac.simulate([NO_BMC], [0], 100, update='simultaneous', lr=0.1, record=True).norms
    k = np.arange(101)
    np.testing.assert_allclose(norms[0, 0], math.sqrt(2) * (1 + 0.1 ** 2) ** (k / 2), rtol=1e-12)


def test_bmc_with_rho1_0_1_converges_within_5000_iterations():
    """Bound: with rho1 = 0.1, rho2 = 0.01, beta = 1 (authors' discretization, WGAN, alternating SGD lr 0.1),
    each of seeds 0-7 has ||X|| < 1e-3 from iteration 5000 on, through 10000 iterations (seeds 0-63 all did
    within 5636 iterations, median 1535)."""
    runs = dirac.simulate([(0.1, 0.01, 1.0)], range(8), 10000)
    assert np.all(runs.converged <= 5000), runs.converged
    assert np.all(runs.first_below <= runs.converged)


@pytest.mark.parametrize('scheme', ['authors', 'euler-maruyama'])
def test_one_iteration_by_hand(scheme):
    rho1, rho2, beta, lr, seed = 0.3, 0.2, 2.0, 0.1, 5
    b1, b2 = dirac.brownian_increments(seed, 1)[0]
    phi, theta = 1.0, 1.0
    if scheme == 'authors':                   # b ~ N(0, 1), no sqrt(lr), |.| of each pre-update coordinate.
        phi, theta = 0.5, 2.0                 # Unequal, so that |phi| and |theta| give different gains.
        gain_phi, gain_theta = rho1 * b1 - rho2 * abs(phi) ** beta * b2, rho1 * b1 - rho2 * abs(theta) ** beta * b2
    else:                                     # dB ~ N(0, lr), Euclidean norm of the pre-update X.
        gain_phi = gain_theta = rho1 * math.sqrt(lr) * b1 + rho2 * math.hypot(phi, theta) ** beta * math.sqrt(lr) * b2
    path = dirac.simulate([(rho1, rho2, beta)], [seed], 1, lr=lr, scheme=scheme, start=(phi, theta), record=True).trajectory
    theta_sgd = theta + lr * phi              # G first.
    phi_sgd = phi - lr * theta_sgd            # Then D at the new theta.
    np.testing.assert_allclose(path[0, 0, 1], [phi_sgd + gain_phi * phi, theta_sgd + gain_theta * theta], rtol=1e-12)


def test_nonsaturating_step_by_hand():
    path = dirac.simulate([NO_BMC], [0], 1, loss='ns', lr=0.5, start=(0.5, 2.0), record=True).trajectory
    sigmoid = lambda t: 1 / (1 + math.exp(-t))
    theta = 2.0 + 0.5 * 0.5 * sigmoid(-0.5 * 2.0)   # G: -log s(phi theta), descended.
    phi = 0.5 - 0.5 * theta * sigmoid(0.5 * theta)  # D: log s(-phi theta), ascended.
    np.testing.assert_allclose(path[0, 0, 1], [phi, theta], rtol=1e-12)


def test_seeds_are_common_random_numbers():
    alone = dirac.simulate([(0.1, 0.01, 1.0)], [3], 3000).converged
    in_grid = dirac.simulate([(0.01, 0.01, 2.0), (0.1, 0.01, 1.0)], [1, 3], 3000).converged
    assert alone[0, 0] == in_grid[1, 1]


def test_table_on_a_reduced_grid(capsys):
    dirac.main(['--table', '--rho1', '0.1,0.001', '--rho2', '0.01', '--beta', '1', '--seeds', '3', '--iterations', '3000', '--tol', '1e-3'])
    out = capsys.readouterr().out
    expected = dirac.simulate([(0.1, 0.01, 1.0)], range(3), 3000)
    assert 'tol = 0.001' in out and 'median over 3 seeds: 0..2' in out
    cell = f'{int(np.median(expected.converged))} ({int(np.median(expected.first_below))}) [3/3] | 400'
    assert cell in out                                                # Ours next to the paper's Table 2.
    assert '>3000 (>3000) [0/3] | 40000' in out                       # rho1 = 0.001 does not converge here.


def test_figure_is_written(tmp_path, capsys):
    path = tmp_path / 'fig1.png'
    dirac.main(['--figure', str(path), '--fig-iterations', '300'])
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'Wrote' in capsys.readouterr().out


@pytest.mark.parametrize('argv', [[], ['--figure', 'out.jpg'], ['--table', '--tol', '-1'], ['--table', '--rho1', 'x'],
                                  ['--table', '--seeds', '0'], ['--table', '--scheme', 'heun']])
def test_bad_command_lines_exit_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        dirac.main(argv)
    assert excinfo.value.code == 2 and 'error' in capsys.readouterr().err


def test_table_shows_the_paper_only_for_its_wgan_setting(capsys):
    dirac.main(['--table', '--loss', 'ns', '--rho1', '0.1', '--rho2', '0.01', '--beta', '1', '--seeds', '1', '--iterations', '500'])
    out = capsys.readouterr().out
    assert 'loss=ns' in out and '| n/a' in out and '| 400' not in out


def test_given_noise_replaces_the_seeds_draws():
    configs, seeds = [(0.1, 0.01, 1.0), (0.01, 0.01, 2.0)], [4, 9]
    noise = np.stack([dirac.brownian_increments(seed, 2500) for seed in seeds])
    drawn = dirac.simulate(configs, seeds, 2500, record=True)
    given = dirac.simulate(configs, [0, 0], 2500, record=True, noise=noise) # The seeds are then only labels.
    np.testing.assert_array_equal(given.trajectory, drawn.trajectory)
    np.testing.assert_array_equal(given.converged, drawn.converged)
    with pytest.raises(ValueError, match='expected'):
        dirac.simulate(configs, seeds, 2500, noise=noise[:, :100])


def test_convergence_iterations_by_hand():
    norms = np.array([[2.0, 0.5, 2.0, 0.5, 0.5],          # Last above at 2: converged from 3, first below at 1.
                      [2.0, 0.5, 0.5, 0.5, 2.0],          # Ends above: not converged.
                      [2.0, 2.0, np.nan, 0.5, 0.5],       # NaN counts as above.
                      [0.5, 0.5, 0.5, 0.5, 0.5],          # Below from the start.
                      [2.0, 2.0, 2.0, 2.0, 2.0]])
    converged, first_below = dirac.convergence_iterations(norms, 1.0)
    np.testing.assert_array_equal(converged, [3, np.inf, 3, 0, np.inf])
    np.testing.assert_array_equal(first_below, [1, 1, 3, 0, np.inf])


def test_convergence_iterations_agree_with_the_simulation():
    """The definition applied to recorded norms (used for the authors' runs) equals the one simulate() keeps on
    the fly, on runs that converge, stay out, and diverge (beta = 2 with rho2 = 0.5 overflows)."""
    runs = dirac.simulate([(0.1, 0.01, 1.0), (0.01, 0.001, 1.0), (0.1, 0.5, 2.0)], range(6), 4000, record=True)
    converged, first_below = dirac.convergence_iterations(runs.norms, 1e-3)
    assert np.isfinite(runs.converged).any() and np.isinf(runs.converged).any()
    assert not np.isfinite(runs.norms[2, :, -1]).all()
    np.testing.assert_array_equal(converged, runs.converged)
    np.testing.assert_array_equal(first_below, runs.first_below)


def test_time_to_converge_scales_as_one_over_rho1_squared():
    """With the unscaled increments, log ||X|| drifts by about -rho1^2 / 2 per iteration (Ito's correction of the
    multiplicative noise; alternating SGD alone keeps ||X|| on an orbit), so the mean first passage from
    ||X_0|| = sqrt(2) below tol is ln(sqrt(2) / tol) / (rho1^2 / 2) iterations, and halving rho1 makes it four times
    as long. rho2 = 0 isolates the rho1 term. Seeds 0-255, tol 1e-2: means 1031 and 4000 against 990 and 3961."""
    rho1s, tol = np.array([0.1, 0.05]), 1e-2
    runs = dirac.simulate([(rho1, 0.0, 1.0) for rho1 in rho1s], range(256), 20000, tol=tol) # Slowest: 12943.
    assert np.isfinite(runs.first_below).all()
    mean = runs.first_below.mean(axis=1)
    np.testing.assert_allclose(mean, math.log(math.sqrt(2) / tol) / (rho1s ** 2 / 2), rtol=0.1)
    assert 3.6 < mean[1] / mean[0] < 4.4


#----------------------------------------------------------------------------
# The stylegan2-ada tree's dirac_gan.py, run from the overlay (no upstream needed).

REPO_ROOT = Path(__file__).resolve().parents[2]
DIRAC_GAN = REPO_ROOT / 'overlays' / 'stylegan2-ada' / 'dirac_gan.py'


def run_dirac_gan(*args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT / 'overlays' / 'common')}
    return subprocess.run([sys.executable, str(DIRAC_GAN), *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_dirac_gan_script_table_and_figure(tmp_path):
    result = run_dirac_gan('--table', '--rho1', '0.1', '--rho2', '0.01', '--beta', '1', '--seeds', '3',
                           '--iterations', '3000', '--figure', 'fig1.png', '--fig-iterations', '300', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = dirac.simulate([(0.1, 0.01, 1.0)], range(3), 3000)
    cell = f'{int(np.median(expected.converged))} ({int(np.median(expected.first_below))}) [3/3] | 400'
    assert cell in result.stdout and 'Wrote fig1.png' in result.stdout
    assert (tmp_path / 'fig1.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_dirac_gan_script_rejects_bad_input_by_its_own_name(tmp_path):
    result = run_dirac_gan('--figure', 'fig1.jpg', cwd=tmp_path)
    assert result.returncode == 2 and 'dirac_gan.py: error: --figure writes a PNG' in result.stderr
    assert list(tmp_path.iterdir()) == []
