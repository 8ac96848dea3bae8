"""The commands: rig replay, rig inspect, rig export, as a user types them."""
import numpy as np
import pytest

from rig.cli import main
from rig.recording import read_session, write_session
from test_recording_files import make_session
from test_recording_import import T, write_suite2p

pytestmark = pytest.mark.timeout(60)


def test_rig_replay_plays_a_suite2p_folder_through_the_loop_and_records_it(tmp_path, capsys):
    write_suite2p(tmp_path / "s2p")
    assert main(["replay", str(tmp_path / "s2p"), "--speed", "max", "--out",
                 str(tmp_path / "run"), "--set", "nodes.decoder.backbone=tiny-llama",
                 "--set", "nodes.decoder.pretrained=false"]) == 0
    out = capsys.readouterr().out
    assert "decoder" in out and "frames: " in out  # the decoder ran on the replayed traces
    assert "stop requested on the control channel" in out  # the replay ended the run
    recorded = read_session(tmp_path / "run")
    np.testing.assert_array_equal(recorded.traces, read_session(tmp_path / "s2p").traces)
    assert recorded.n_frames == T


def test_rig_inspect_prints_topics_counts_and_rates(tmp_path, capsys):
    path = write_session(tmp_path / "s.mcap", make_session())
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "complete: " in out
    assert "traces" in out and "behaviour" in out and "30.00" in out


def test_rig_inspect_names_a_bad_file(tmp_path, capsys):
    (tmp_path / "x.mcap").write_bytes(b"nonsense" * 4)
    assert main(["inspect", str(tmp_path / "x.mcap")]) == 1
    assert "x.mcap: not an MCAP recording" in capsys.readouterr().err


def test_rig_export_writes_nwb(tmp_path, capsys):
    path = write_session(tmp_path / "s.mcap", make_session())
    assert main(["export", str(path), "--nwb", str(tmp_path / "s.nwb")]) == 0
    np.testing.assert_array_equal(read_session(tmp_path / "s.nwb").traces, make_session().traces)
    assert main(["export", str(path), "--nwb", str(tmp_path / "s.nwb")]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_replay_speed_argument_names_the_valid_range(capsys):
    with pytest.raises(SystemExit):
        main(["replay", "x.mcap", "--speed", "-2"])
    assert "must be > 0, or 'max'" in capsys.readouterr().err


def test_rig_replay_of_a_corrupt_file_names_it_before_starting_anything(tmp_path, capsys):
    (tmp_path / "bad.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(40))
    assert main(["replay", str(tmp_path / "bad.mcap")]) == 2
    assert "bad.mcap: " in capsys.readouterr().err
