"""ganpatch.dirac: the Dirac-GAN simulator (orbit without BMC, convergence with rho1 = 0.1, the discretizations
by hand) and its CLI (--table on a reduced grid, --figure, bad input)."""

import math

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
    within 5635 iterations, median 1516)."""
    runs = dirac.simulate([(0.1, 0.01, 1.0)], range(8), 10000)
    assert np.all(runs.converged <= 5000), runs.converged
    assert np.all(runs.first_below <= runs.converged)


@pytest.mark.parametrize('scheme', ['authors', 'euler-maruyama'])
def test_one_iteration_by_hand(scheme):
    rho1, rho2, beta, lr, seed = 0.3, 0.2, 2.0, 0.1, 5
    path = dirac.simulate([(rho1, rho2, beta)], [seed], 1, lr=lr, scheme=scheme, record=True).trajectory
    b1, b2 = dirac.brownian_increments(seed, 1)[0]
    phi, theta = 1.0, 1.0
    theta_sgd = theta + lr * phi              # G first: theta' = phi.
    phi_sgd = phi - lr * theta_sgd            # Then D at the new theta: phi' = -theta.
    norm = math.hypot(phi, theta)             # Pre-update X, shared (b1, b2).
    if scheme == 'authors':                   # b ~ N(0, 1), no sqrt(lr).
        gain = rho1 * b1 - rho2 * norm ** beta * b2
    else:                                     # dB ~ N(0, lr).
        gain = rho1 * math.sqrt(lr) * b1 + rho2 * norm ** beta * math.sqrt(lr) * b2
    np.testing.assert_allclose(path[0, 0, 1], [phi_sgd + gain * phi, theta_sgd + gain * theta], rtol=1e-12)


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
