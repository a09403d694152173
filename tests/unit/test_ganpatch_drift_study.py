"""ganpatch.drift_study: the modified flows track gradient descent closer than the original flow (every game and
update), the common-clock coefficients beat the paper's for unequal learning rates, the study's closed-form terms
equal the library's double-backward gradients, and the CLI."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganpatch import drift, drift_study


@pytest.fixture(scope='module')
def study():
    return drift_study.run_study(), drift_study.learning_rate_study()


def test_modified_flow_tracks_the_iterates_better_than_the_original_flow(study):
    panels, _ = study
    assert len(panels) == 6
    for panel in panels:
        d = panel.distances
        assert d['Euler ~ modified flow'] * 2 < d['Euler ~ original flow'], (panel.setting.game.name, panel.update, d)


def test_cancelling_the_interaction_terms_stops_the_dirac_gan_spiral(study):
    """Simultaneous gradient descent spirals out of the flow's orbit (radius sqrt 2); without the interaction
    terms of the drift it stays on it."""
    dirac = next(p for p in study[0] if 'Dirac' in p.setting.game.name and p.update == 'simultaneous')
    radius = np.linalg.norm(dirac.paths['original flow'], axis=1)
    assert radius == pytest.approx(math.sqrt(2), rel=1e-6)
    assert np.linalg.norm(dirac.paths['euler'][-1]) > 1.5 * math.sqrt(2)
    assert np.linalg.norm(dirac.paths['euler + cancel-interaction'], axis=1).max() < 1.05 * math.sqrt(2)


def test_the_divergent_linear_game_diverges_under_simultaneous_updates(study):
    panel = next(p for p in study[0] if 'ε = 0.09' in p.setting.game.name and p.update == 'simultaneous')
    norms = np.linalg.norm(panel.paths['euler'], axis=1)
    flow_norms = np.linalg.norm(panel.paths['original flow'], axis=1)
    assert norms[-1] > norms[0] > flow_norms[-1]
    assert np.linalg.norm(panel.paths['modified flow'][-1]) > norms[0] # The modified flow diverges too.


def test_common_clock_coefficients_track_unequal_learning_rates_better(study):
    _, rows = study
    assert len(rows) == len(drift_study.LEARNING_RATE_CASES)
    for lrs, update, steps, d in rows:
        assert d['common-clock'] * 2 < min(d['paper'], d['original']), (lrs, update, steps, d)


def linear_players(v, eps):
    x, y = (torch.nn.Parameter(torch.tensor(value, dtype=torch.float64)) for value in v)
    return drift.Player([x], lambda b: eps * x ** 2 / 2 - x * y), drift.Player([y], lambda b: eps * y ** 2 / 2 + x * y)


def dirac_players(v):
    psi, theta = (torch.nn.Parameter(torch.tensor(value, dtype=torch.float64)) for value in v)
    return (drift.Player([psi], lambda b: F.softplus(psi * theta) + math.log(2)),
            drift.Player([theta], lambda b: -F.softplus(psi * theta)))


@pytest.mark.parametrize('game, players', [(drift_study.linear_game(0.09), lambda v: linear_players(v, 0.09)),
                                           (drift_study.dirac_game(), dirac_players)])
def test_closed_form_terms_equal_the_library_gradients(game, players):
    rng = np.random.default_rng(0)
    for v in rng.uniform(-1.5, 1.5, size=(5, 2)):
        closed_form = drift_study.regularizer_gradients(game, v)
        field = game.field(v)
        for term_index, term in enumerate(drift.TERMS):
            regularizer = drift.DriftRegularizer(*players(v), {p: drift.Terms(**{term: 1.0}) for p in drift.PLAYERS})
            for player_index, player in enumerate(drift.PLAYERS):
                _, (total,) = regularizer.gradients(player)
                loss_grad = -field[player_index]
                assert total.item() - loss_grad == pytest.approx(closed_form[player][term_index], rel=1e-10, abs=1e-13)


def test_cli_prints_the_distances_and_writes_the_figure(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(drift_study, 'run_study', lambda: study[0])
    monkeypatch.setattr(drift_study, 'learning_rate_study', lambda: study[1])
    figure = tmp_path / 'drift.png'
    drift_study.main(['--figure', str(figure)])
    out = capsys.readouterr().out
    assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert out.count('Euler ~ modified flow') == 6
    assert 'closer to the iterates than the original flow' in out
    assert f'Wrote {figure}' in out


@pytest.mark.parametrize('argv, message', [(['--figure', 'out.jpg'], 'give a path ending in .png'),
                                           (['--figure', '/nonexistent-folder/out.png'], 'does not exist')])
def test_cli_rejects_bad_figure_paths_before_any_work(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(drift_study, 'run_study', lambda: pytest.fail('the study ran before the arguments were checked'))
    with pytest.raises(SystemExit) as exit_info:
        drift_study.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_regularized_iterates_follow_their_modified_flow_to_second_order():
    """Dirac-GAN, alternating, over 20 time units: gradient descent with cancel-interaction against the flow with
    the drift that remains (its self terms). Halving lr divides the distance by ~4, an O(lr^2) error."""
    distances = []
    for lr in (0.1, 0.05, 0.025):
        setting = drift_study.Setting(drift_study.dirac_game(), (1.0, 1.0), lr, {'alternating': round(20 / lr)})
        distances.append(drift_study.run_panel(setting, 'alternating').distances['Euler + cancel-interaction ~ its modified flow'])
    ratios = [distances[0] / distances[1], distances[1] / distances[2]]
    assert all(3.3 < ratio < 4.7 for ratio in ratios), (distances, ratios)
