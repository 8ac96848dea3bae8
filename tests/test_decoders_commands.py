"""rig train / rig eval / rig salience on a small recorded session."""
import json

import numpy as np
import pytest
import torch

from decoders.synthetic import make_session
from rig import session as rs
from rig.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "fish.mcap"
    return rs.write(path, make_session(n_frames=240, n_neurons=40, n_motor=6, seed=5))


def test_train_eval_salience_round_trip(recorded, tmp_path, capsys):
    out = tmp_path / "dec"
    assert main(["train", str(recorded), "--model", "tiny-llama", "--random-init", "--window", "4",
                 "--screen", "8", "--epochs", "2", "--out", str(out)]) == 0
    assert (out / "decoder.json").exists() and (out / "metrics.jsonl").exists()
    assert "chance" in json.loads((out / "test.json").read_text())
    table = tmp_path / "eval.json"
    assert main(["eval", str(recorded), "--decoder", str(out), "--out", str(table)]) == 0
    printed = capsys.readouterr().out
    assert "| chance (train mean) |" in printed and str(out) in printed
    assert main(["salience", str(out), str(recorded), "--method", "grad_x_input", "--frames", "8",
                 "--out", str(tmp_path / "sal.npz")]) == 0
    with np.load(tmp_path / "sal.npz", allow_pickle=False) as f:
        assert f["scores"].shape == (40,)


def test_eval_without_models_says_what_to_give(recorded, tmp_path, capsys):
    assert main(["eval", str(recorded), "--out", str(tmp_path / "e.json")]) == 2
    assert "--decoder" in capsys.readouterr().err


def test_train_with_unknown_backbone_names_the_choices(recorded, tmp_path, capsys):
    assert main(["train", str(recorded), "--model", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "d")]) == 2
    assert "smollm2" in capsys.readouterr().err


def test_train_warns_when_validation_says_ridge_does_as_well(recorded, tmp_path, capsys):
    out = tmp_path / "dec"
    # lr 1e-7 and no linear path: an untrained transformer, surely no better than ridge
    assert main(["train", str(recorded), "--model", "tiny-llama", "--random-init", "--window",
                 "4", "--screen", "8", "--epochs", "1", "--lr", "1e-7", "--lags", "0",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "no better than lagged ridge" in err
    val = json.loads((out / "test.json").read_text())["validation"]
    assert val["r_decoder"] <= val["r_ridge"]


def test_train_falls_back_to_ridge_when_the_transformer_learned_nothing(recorded, tmp_path,
                                                                        capsys):
    out = tmp_path / "dec"
    # an untrained transformer beside the linear path: validation gives it (almost) no share
    assert main(["train", str(recorded), "--model", "tiny-llama", "--random-init", "--window",
                 "4", "--screen", "8", "--epochs", "1", "--lr", "1e-7", "--lags", "2",
                 "--members", "1", "--out", str(out)]) == 0
    share, _ = json.loads((out / "decoder.json").read_text())["mix"]
    assert share <= 0.1
    err = capsys.readouterr().err
    assert f"share of {share:.2f}" in err and "prefer ridge" in err
