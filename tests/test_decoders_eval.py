"""Evaluation that costs what it scores; baselines and behaviour files from the command line."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import evaluate as ev
from decoders.baselines import fit_ridge
from decoders.synthetic import make_session
from decoders.train import fit, split_frames
from rig import session as rs
from rig.cli import main
from rig.recording import RecordingError
from rig.recording.importers import read_behaviour
from tests.test_recording_import import write_suite2p

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def session():
    return make_session(n_frames=300, n_neurons=40, n_motor=6, seed=3)


@pytest.fixture(scope="module")
def recorded(session, tmp_path_factory):
    return rs.write(tmp_path_factory.mktemp("s") / "fish.mcap", session)


def test_scoring_decodes_only_the_test_frames_and_scores_as_full_decoding(session):
    dec, _ = fit([session], model="tiny-llama", pretrained=False, window=8, screen=8, epochs=1,
                 lags=2)
    dec.net.mix = (0.5, 0.5)  # the backbone runs, whatever share validation chose
    rows = []
    hook = dec.net.backbone.register_forward_hook(
        lambda m, args, kw, out: rows.append(kw["inputs_embeds"].shape[0]), with_kwargs=True)
    scored = ev.score_sessions(dec.predict, [session])
    hook.remove()
    test = split_frames(session.n_frames).test
    # One window per scored frame (per member: one backbone pass holds the members' windows),
    # none for the 80% of frames that are never scored.
    assert sum(rows) == dec.config.members * (test[1] - test[0])
    full = dec.predict(session.traces)  # every frame, as rig eval did before
    everything = ev.score_sessions(lambda x, start: full, [session])
    # Same windows, batched from another first frame: float32 round-off only.
    for key in ("r_mean", "r2_mean", "rmse_mean"):
        assert scored["model"][key] == pytest.approx(everything["model"][key], abs=1e-6)
    assert scored["model"]["bout_f1"] == everything["model"]["bout_f1"]


def test_ridge_prediction_from_a_start_frame_equals_the_full_prediction_there(session):
    ridge = fit_ridge([session], lags=3, screen=8)
    full, part = ridge.predict(session.traces), ridge.predict(session.traces, 200)
    assert np.isnan(part[:200]).all()
    np.testing.assert_allclose(part[200:], full[200:], atol=1e-6)


def test_eval_baselines_take_screen_all_and_lags(recorded, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(recorded), "--baselines", "--screen", "all", "--lags", "2",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"ridge, 2 lags, all neurons", "GRU, all neurons"}
    assert main(["eval", str(recorded), "--baselines", "--screen", "8", "--lags", "3",
                 "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["rows"]) == {
        "ridge, 3 lags, 8 neurons", "ridge, 3 lags, all neurons", "GRU, 8 neurons"}
    assert "| chance (train mean) |" in capsys.readouterr().out


def write_tail_npy(folder, t_s, angles):
    np.save(folder / "tail.npy", angles.astype(np.float32))
    np.save(folder / "tail_t.npy", t_s)


def test_suite2p_tail_npy_takes_its_times_from_tail_t_npy(tmp_path):
    write_suite2p(tmp_path)
    t = np.arange(0, 12, 0.01)  # 100 Hz camera, s from the first imaging frame (10 Hz, 120 f)
    angles = np.stack([np.sin(t), -np.sin(t), np.cos(t)], 1)  # segment 0 goes up and down
    write_tail_npy(tmp_path, t, angles)
    s = rs.read(tmp_path)
    assert s.tail.shape == (120, 3) and s.camera_tail.shape == (len(t), 3)
    np.testing.assert_allclose(s.tail[:, 0], -s.tail[:, 1], atol=1e-6)
    np.testing.assert_allclose(s.tail[50, 2], np.cos(t[(t >= 5.0) & (t < 5.1)]).mean(), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), segments=st.integers(1, 5), extra=st.integers(-3, 3),
       flat=st.booleans())
def test_tail_t_npy_of_any_length_reads_or_is_refused_by_name(tmp_path_factory, n, segments,
                                                             extra, flat):
    folder = tmp_path_factory.mktemp("b")
    angles = np.zeros((n, segments)) if not flat else np.zeros(n)
    times = np.arange(max(n + extra, 0)) / 100
    write_tail_npy(folder, times, angles)
    try:
        t_s, read = read_behaviour(folder / "tail.npy")
    except RecordingError as exc:
        assert len(times) != n and "tail_t.npy" in str(exc) and "one time (s) per row" in str(exc)
    else:
        assert len(t_s) == n and read.shape == (n, 1 if flat else segments)


def test_a_tail_file_without_time_is_one_line_naming_tail_t(recorded, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tail.npy", rng.normal(size=(300, 4)))  # frames x segments, no time
    for cmd in (["train", str(recorded), "--model", "tiny-llama", "--random-init",
                 "--out", str(tmp_path / "d")], ["eval", str(recorded), "--baselines"]):
        assert main(cmd + ["--behaviour", str(tmp_path / "tail.npy")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "timestamps go backwards" in err and "tail_t.npy" in err


def test_behaviour_file_replaces_the_sessions_tail_for_training(recorded, session, tmp_path):
    t = np.arange(session.n_frames) / session.frame_rate_hz
    write_tail_npy(tmp_path, t, -session.tail)  # one sample per frame, sign flipped
    out = tmp_path / "dec"
    assert main(["train", str(recorded), "--model", "tiny-llama", "--random-init", "--window",
                 "4", "--screen", "8", "--epochs", "1", "--behaviour", str(tmp_path / "tail.npy"),
                 "--out", str(out)]) == 0
    y_mean = json.loads((out / "decoder.json").read_text())["y_mean"]
    np.testing.assert_allclose(y_mean, -session.tail[:210].mean(0), atol=1e-5)


def test_behaviour_files_must_match_the_sessions_one_to_one(recorded, tmp_path, capsys):
    assert main(["eval", str(recorded), str(recorded), "--baselines", "--behaviour",
                 str(tmp_path / "tail.npy")]) == 2
    assert "one per session" in capsys.readouterr().err
