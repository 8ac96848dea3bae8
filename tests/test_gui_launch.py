"""`rig gui` arguments: which loop the window starts or attaches to, and the errors."""
import argparse
import json

import pytest

from gui.commands import register
from gui.launch import LaunchError, plan
from gui.loop import LoopProcess, read_endpoints


def parse(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["gui", *argv])


def test_attach_reads_endpoints_from_a_run_folder(tmp_path):
    (tmp_path / "endpoints.json").write_text(json.dumps(
        {"pub": "tcp://a:1", "sub": "tcp://a:2", "control": "tcp://a:3"}))
    endpoints, launcher, keys = plan(parse("--attach", str(tmp_path)))
    assert (endpoints.pub, endpoints.sub, endpoints.control) == ("tcp://a:1", "tcp://a:2",
                                                                  "tcp://a:3")
    assert launcher is None and keys is None


def test_attach_names_what_is_missing():
    with pytest.raises(ValueError, match=r"missing \['control'\]"):
        read_endpoints('{"pub": "tcp://a:1", "sub": "tcp://a:2"}')
    with pytest.raises(LaunchError, match="not an endpoints.json"):
        plan(parse("--attach", "no/such/folder"))


def test_selftest_launches_rig_run_until_stopped(tmp_path):
    endpoints, launcher, _ = plan(parse("--selftest", "--out", str(tmp_path),
                                        "--set", "nodes.source.n_neurons=10"))
    loop = launcher()
    assert endpoints is None and isinstance(loop, LoopProcess)
    assert loop.argv[3:5] == ["run", "--config"] and "run.duration_s=0" in loop.argv
    assert "nodes.source.n_neurons=10" in loop.argv
    assert loop.run_dir.parent == tmp_path


def test_replay_of_a_missing_session_is_refused():
    with pytest.raises(LaunchError, match="no such session"):
        plan(parse("--replay", "no/such/session.mcap"))


def test_a_bad_config_is_reported_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nnot_a_key = 1\n[nodes.x]\nclass = \"rig.selftest:Sink\"\n")
    with pytest.raises(LaunchError, match="not_a_key"):
        plan(parse("--config", str(bad)))


def test_window_size_and_replay_speed_arguments(tmp_path, capsys):
    args = parse("--size", "1366x768", "--size", "1920X1080")
    assert args.size == [(1366, 768), (1920, 1080)]
    for bad, message in (("100x100", "must be at least 640x480"),
                         ("wide", "expected WIDTHxHEIGHT")):
        with pytest.raises(SystemExit):
            parse("--size", bad)
        assert message in capsys.readouterr().err
    session = tmp_path / "day1.mcap"
    session.write_bytes(b"")
    _, launcher, _ = plan(parse("--replay", str(session), "--speed", "4", "--out",
                                str(tmp_path)))
    argv = launcher().argv
    assert argv[argv.index("--speed") + 1] == "4"


def test_attach_reads_the_runs_control_secret_from_its_folder(tmp_path):
    from gui.launch import attach_secret

    assert attach_secret(str(tmp_path)) is None  # none there: requests would be refused
    (tmp_path / "control.secret").write_text("ab" * 32)
    (tmp_path / "endpoints.json").write_text("{}")
    assert attach_secret(str(tmp_path)) == bytes.fromhex("ab" * 32)
    assert attach_secret(str(tmp_path / "endpoints.json")) == bytes.fromhex("ab" * 32)
    (tmp_path / "control.secret").write_text("not hex")
    with pytest.raises(LaunchError, match="not a Rig control secret"):
        attach_secret(str(tmp_path))
