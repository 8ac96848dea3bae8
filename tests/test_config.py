"""Configs: each broken file in tests/configs/ names its mistake (first line: # expect: ...)."""
import subprocess
import sys
from pathlib import Path

import pytest

from rig import config as cfg
from rig.cli import main

BROKEN = sorted((Path(__file__).parent / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_config_names_file_table_and_key(path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_builtin_configs_are_valid():
    for name in ("selftest", "sim"):
        config = cfg.load(cfg.builtin(name))
        assert config.nodes


def test_overrides_reach_node_settings(tmp_path):
    config = cfg.load(cfg.builtin("selftest"), ["nodes.source.n_neurons=77", "run.name=x"])
    assert config.nodes["source"].settings["n_neurons"] == 77 and config.run.name == "x"
    with pytest.raises(cfg.ConfigError, match="TABLE.KEY=VALUE"):
        cfg.load(cfg.builtin("selftest"), ["oops"])


def test_cli_bad_config_exits_nonzero_naming_the_key(capsys):
    assert main(["run", "--config", str(BROKEN[0].parent / "unknown_key.toml")]) == 2
    assert "delay_msec" in capsys.readouterr().err


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "rig.cli", "run", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--config", "--sim", "--selftest", "--duration", "--set", "--machine", "--out"):
        assert option in out
    top = subprocess.run([sys.executable, "-m", "rig.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("run", "keys", "ctl", "bench"):
        assert command in top


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_a_busy_port_is_one_line_and_leaves_no_run_folder(tmp_path, capsys):
    import zmq

    taken = zmq.Context.instance().socket(zmq.PUB)
    taken.linger = 0
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        config = tmp_path / "c.toml"
        config.write_text(f"[bus]\npub_port = {port}\n[nodes.sink]\nclass = "
                          "\"rig.selftest:Sink\"\n")
        assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    finally:
        taken.close(0)
    assert "another Rig may be running, or set the port to 0" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_negative_duration_override_is_refused_before_start(capsys):
    assert main(["run", "--selftest", "--set", "run.duration_s=-3"]) == 2
    assert "[run] duration_s: Expected `float` >= 0.0" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv, expected", [
    (["ctl", "status", "--endpoint", "notanendpoint"], "is not a ZeroMQ endpoint"),
    (["ctl", "status", "--endpoint", "tcp://127.0.0.1:1"], "--run RUN_DIR"),
    (["ctl", "status", "--run", "/nonexistent/run"], "no such file"),
    (["ctl", "record", "maybe", "--run", "x"], "say on or off"),
    (["ctl", "set", "novalue", "--run", "x"], "KEY=VALUE"),
    (["keys", "/etc/passwd/x"], "cannot make keys in /etc/passwd/x"),
])
def test_cli_errors_are_one_line_naming_the_fix(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in one_line(capsys.readouterr().err)


def test_key_files_are_private(tmp_path):
    from rig.bus import make_keys

    keys = make_keys(tmp_path / "keys", ["rig", "gpu"])
    secrets = sorted(keys.glob("*.key_secret"))
    assert [p.name for p in secrets] == ["gpu.key_secret", "rig.key_secret",
                                         "server.key_secret"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets)
    assert keys.stat().st_mode & 0o777 == 0o700


def test_missing_curve_keys_are_one_line_naming_rig_keys(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f"[bus]\ncurve = true\nkeys_dir = \"{tmp_path / 'nokeys'}\"\n"
                      "[nodes.sink]\nclass = \"rig.selftest:Sink\"\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert f"rig keys {tmp_path / 'nokeys'}" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
