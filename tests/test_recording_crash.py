"""A recorder killed with SIGKILL leaves a file that holds every message up to its last flush."""
import os
import signal

import msgspec
import pytest

from rig import config as cfg
from rig.messages import Header
from rig.recording import read_session
from rig.recording.format import RecordingReader
from rig.recording.inspect import summarize
from rig.recording.recorder import Recorder
from rig.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)


def recorder_run(tmp_path, rate_hz: float) -> Supervisor:
    """A run of a 100-neuron source at ``rate_hz`` and a recorder flushing every 0.2 s,
    into ``tmp_path/run`` (not started)."""
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"source": {"class": "rig.selftest:Source", "n_neurons": 100,
                                "rate_hz": rate_hz},
                     "recorder": {"class": "rig.recording.recorder:Recorder", "flush_s": 0.2}}}
    return Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")


def test_sigkilled_recorder_file_holds_everything_up_to_the_last_flush(tmp_path):
    sup = recorder_run(tmp_path, rate_hz=100)
    try:
        sup.start()
        # Mid-run: some flushes done, the source still publishing.
        assert sup.wait_for(lambda s: s.stats("recorder").get("flushed", 0) >= 40)
        flushed = sup.stats("recorder")["flushed"]  # reported at or before the last flush
        os.kill(sup.nodes["recorder"].process.pid, signal.SIGKILL)
        sup.nodes["recorder"].process.join(5)
        assert sup.nodes["recorder"].process.exitcode == -signal.SIGKILL
    finally:
        sup.shutdown()
    path = tmp_path / "run" / "session.mcap"

    reader = RecordingReader(path)
    headers = [(e.topic, msgspec.msgpack.decode(e.frames[0], type=Header))
               for e in reader.entries()]
    assert not reader.complete and "no footer" in reader.problem
    assert len(headers) >= flushed
    seqs = [h.seq for topic, h in headers if topic == "traces"]
    assert seqs == list(range(len(seqs)))  # nothing missing in between

    info = summarize(path)  # what `rig inspect` prints
    assert not info["complete"] and info["messages"] == len(headers)
    session = read_session(path)
    assert session.n_frames == len(seqs) and "no footer" in session.meta["recovered"]


def test_a_restarted_recorder_never_overwrites_the_first_file(tmp_path):
    (tmp_path / "session.mcap").write_bytes(b"precious")
    (tmp_path / "session-1.mcap").write_bytes(b"precious too")
    assert Recorder._free_path(tmp_path / "session.mcap") == tmp_path / "session-2.mcap"
