"""Baselines (lagged ridge, GRU) and the evaluation metrics, against plain references."""
import numpy as np
import pytest
import torch

from decoders import evaluate as ev
from decoders.baselines import fit_gru, fit_ridge, lagged
from decoders.synthetic import make_session
from decoders.train import split_frames
from tests import naive_decoders as naive

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def session():
    return make_session(n_frames=400, n_neurons=80, n_motor=8, seed=2)


def test_lagged_design_row_holds_current_and_past_frames_only():
    z = np.arange(12, dtype=float).reshape(6, 2)
    X = lagged(z, 3)
    np.testing.assert_array_equal(X[4], [8, 9, 6, 7, 4, 5])
    np.testing.assert_array_equal(X[0], [0, 1, 0, 0, 0, 0])


def test_ridge_matches_normal_equations_at_the_chosen_penalty(session):
    m = fit_ridge([session], lags=3, screen=20)
    sp = split_frames(session.n_frames)
    X = lagged(m.normalise(session.traces), 3)[:sp.train[1]].astype(np.float64)
    coef, icpt = naive.ridge(X, session.tail[:sp.train[1]].astype(np.float64), m.alpha)
    np.testing.assert_allclose(m.coef, coef, atol=1e-6)
    np.testing.assert_allclose(m.intercept, icpt, atol=1e-6)


def test_ridge_and_gru_beat_chance_on_held_out_frames(session):
    ridge = ev.score_sessions(fit_ridge([session], lags=4, screen=16).predict, [session])
    gru, _ = fit_gru([session], hidden=16, window=8, screen=16, epochs=8)
    gru_s = ev.score_sessions(gru.predict, [session])
    assert ridge["model"]["r2_mean"] > 0.1 and ridge["model"]["r_mean"] > 0.4
    assert gru_s["model"]["r2_mean"] > 0.0 and gru_s["model"]["r_mean"] > 0.3
    assert abs(ridge["chance"]["r2_mean"]) < 0.2  # test mean differs a little from train mean


def test_scores_match_numpy_definitions():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 3))
    pred = true + rng.normal(0, 0.5, (50, 3))
    s = ev.scores(pred, true)
    for i in range(3):
        assert s["r"][i] == pytest.approx(naive.pearson(pred[:, i], true[:, i]))
        assert s["rmse"][i] == pytest.approx(np.sqrt(np.mean((pred[:, i] - true[:, i]) ** 2)))
        assert s["r2"][i] == pytest.approx(1 - np.sum((pred[:, i] - true[:, i]) ** 2)
                                           / np.sum((true[:, i] - true[:, i].mean()) ** 2))


def test_chance_predictor_scores_zero_r2_on_its_own_data():
    true = np.random.default_rng(1).normal(size=(40, 2))
    assert ev.scores(ev.chance(true, 40), true)["r2_mean"] == pytest.approx(0.0, abs=1e-9)


def test_bout_f1_is_one_for_perfect_and_zero_for_silent_prediction():
    tail = np.zeros((20, 2))
    tail[5:8] = 1.0
    assert ev.bout_f1(tail, tail, 0.5) == 1.0
    assert ev.bout_f1(np.zeros_like(tail), tail, 0.5) == 0.0


def test_paired_test_reports_wins_and_p_values():
    out = ev.paired([0.5, 0.6, 0.7, 0.65], [0.4, 0.5, 0.55, 0.6])
    assert out["wins"] == 4 and out["diff_mean"] == pytest.approx(0.1)
    assert 0 < out["t_p"] < 0.05
    with pytest.raises(ValueError, match="one value per seed"):
        ev.paired([1, 2], [1])


def test_table_has_one_row_per_model_with_mean_and_sd():
    rows = [{"r_mean": 0.5, "r2_mean": 0.2, "rmse_mean": 0.1, "bout_f1": 0.7},
            {"r_mean": 0.7, "r2_mean": 0.4, "rmse_mean": 0.1, "bout_f1": 0.9}]
    md = ev.table({"ridge": ev.aggregate(rows), "chance": ev.aggregate(rows[:1])})
    assert "| ridge | 0.600 ± 0.141" in md and md.count("\n") == 3
