"""``rig simulate`` parses its options, simulates and hands the session to rig.session.write."""
import argparse

import numpy as np
import pytest

from sims import commands


def parse(argv):
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate", *argv])


def test_simulate_command_writes_the_session(monkeypatch, tmp_path):
    from rig import session as rs
    written = {}

    def fake_write(path, session):
        written["path"], written["session"] = path, session
        return path

    monkeypatch.setattr(rs, "write", fake_write)
    args = parse(["--out", str(tmp_path / "f.mcap"), "--neurons", "80", "--duration", "10",
                  "--seed", "4", "--stim-every", "4", "--ensemble-size", "3"])
    assert args.func(args) == 0
    s = written["session"]
    assert s.n_neurons == 80 and s.n_frames == 20 and len(s.stim_frame) == 4
    assert s.meta["config"]["seed"] == 4 and "presyn" in s.truth
    assert np.all(s.stim_targets >= 0)


def test_simulate_command_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        parse(["--out", "x.mcap", "--p", "1.5"])
    assert "must be in [0, 1)" in capsys.readouterr().err
    args = parse(["--out", "x.mcap", "--neurons", "1"])
    assert args.func(args) == 2
    assert "FishConfig.n_neurons" in capsys.readouterr().err
