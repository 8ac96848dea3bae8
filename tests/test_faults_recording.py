"""Faults that touch data (issue 13): damaged and cut files, a killed or failing recorder,
a full disk, replays that lose messages or fire old stimulations. Each test asserts what the
file or the run says it lost, not only that nothing raised."""
import tempfile
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.cli import main
from rig.recording import RecordingError, read_session
from rig.messages import Header
from rig.recording.format import RecordingReader, RecordingWriter
from rig.recording.inspect import summarize
from rig.recording.sessions import wire_frames

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000_000_000_000


def header_of(entry) -> Header:
    return msgspec.msgpack.decode(entry.frames[0], type=Header)


def write_recording(path, frames=60, neurons=8, flush_every=10):
    """A recording of ``frames`` traces and tail messages, flushed (one chunk) every
    ``flush_every`` frames as the recorder does on its timer, closed with a footer."""
    writer = RecordingWriter(path)
    rng = np.random.default_rng(0)
    for i in range(frames):
        t = T0 + i * 33_000_000
        for topic, arrays in (("traces", {"dff": rng.random(neurons, dtype=np.float32)}),
                              ("tail", {"angles": rng.random(3, dtype=np.float32)})):
            writer.add(topic, wire_frames(topic, arrays, {}, i, t, i, source="fish"), t, t, i)
        if i % flush_every == flush_every - 1:
            writer.flush()
    writer.add_array("positions", rng.random((neurons, 3)).astype(np.float32))
    writer.close()
    return path


WHOLE = write_recording(Path(tempfile.mkdtemp(prefix="rig-faults-")) / "whole.mcap").read_bytes()


def damaged(tmp_path, data, name="bad.mcap"):
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def test_an_intact_file_is_complete(tmp_path):
    info = summarize(damaged(tmp_path, WHOLE, "whole.mcap"))
    assert info["complete"] and info["messages"] == 120 and info["lost"] == {}


def test_a_flipped_byte_at_offset_40_is_reported_as_damage_and_the_messages_recovered(tmp_path):
    data = bytearray(WHOLE)
    data[40] ^= 0xFF
    info = summarize(damaged(tmp_path, data))
    assert not info["complete"] and info["corrupt"]
    assert "killed" not in info["problem"]  # damage, not a crash
    assert info["messages"] == 120  # only the metadata record was hit


def test_a_corrupt_chunk_is_skipped_reported_and_the_rest_exported(tmp_path, capsys):
    data = bytearray(WHOLE)
    middle = len(data) // 2
    data[middle] ^= 0x01
    bad = damaged(tmp_path, data)
    info = summarize(bad)
    assert not info["complete"] and any("crc" in c.lower() for c in info["corrupt"])
    assert 0 < info["messages"] < 120
    # the gap is in the sequence numbers of both streams, per source and topic
    assert set(info["lost"]) == {"fish traces", "fish tail"}
    assert info["messages"] + sum(info["lost"].values()) == 120
    assert main(["inspect", str(bad)]) == 3
    assert "INCOMPLETE" in capsys.readouterr().out
    assert main(["export", str(bad), "--nwb", str(tmp_path / "out.nwb")]) == 0
    assert read_session(tmp_path / "out.nwb").n_frames == info["topics"]["traces"]["count"]


def test_a_file_cut_mid_write_says_where_and_how_much_it_lost(tmp_path):
    cut = damaged(tmp_path, WHOLE[: len(WHOLE) // 2 + 7], "cut.mcap")
    info = summarize(cut)
    assert not info["complete"] and "no footer" in info["problem"]
    assert "byte(s) lost" in info["problem"] and info["messages"] > 0


def check_never_complete(data):
    """What `rig inspect` relies on: a damaged file is never called complete, and reading
    it ends in figures or one RecordingError, never another exception."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.mcap"
        path.write_bytes(bytes(data))
        try:
            info = summarize(path)
        except RecordingError:
            return
        assert not info["complete"]
        assert info["problem"] or info["corrupt"] or info["lost"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(0, len(WHOLE) - 1), mask=st.integers(1, 255))
def test_inspect_finds_any_flipped_byte(offset, mask):
    data = bytearray(WHOLE)
    data[offset] ^= mask
    check_never_complete(data)


@settings(max_examples=100, deadline=None)
@given(length=st.integers(0, len(WHOLE) - 1))
def test_inspect_never_calls_a_truncated_file_complete(length):
    check_never_complete(WHOLE[:length])


def replay_config(tmp_path, *extra_nodes):
    """A replay loop of the replay node and the recorder only (no backbone to load)."""
    path = tmp_path / "replay.toml"
    path.write_text("[run]\nname = \"replay\"\nheartbeat_s = 0.1\n\n"
                    "[nodes.replay]\nclass = \"rig.recording.replay:Replay\"\n\n"
                    "[nodes.recorder]\nclass = \"rig.recording.recorder:Recorder\"\n"
                    + "".join(extra_nodes))
    return path


def test_replay_at_max_speed_rerecords_every_frame_marked_as_replayed(tmp_path):
    original = write_recording(tmp_path / "big.mcap", frames=3000, neurons=2000,
                               flush_every=100)
    out = tmp_path / "run"
    assert main(["replay", str(original), "--speed", "max", "--config",
                 str(replay_config(tmp_path)), "--out", str(out)]) == 0
    info = summarize(out / "session.mcap")
    assert info["topics"]["traces"]["count"] == 3000 and info["topics"]["tail"]["count"] == 3000
    assert info["complete"] and info["lost"] == {} and info["recorder"]["lost"] == 0
    sources = {e.topic: header_of(e).source
               for e in RecordingReader(out / "session.mcap").entries({"traces", "tail"})}
    assert sources == {"traces": "replay:fish", "tail": "replay:fish"}
