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
