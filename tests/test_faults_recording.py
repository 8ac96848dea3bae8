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


def write_recording(path, frames=60, neurons=8, flush_every=10, source="fish", plans=False,
                    compression="none"):
    """A recording of ``frames`` traces and tail messages from ``source`` (and with ``plans``
    a planner's stim.plan every 5th frame), flushed (one chunk) every ``flush_every`` frames
    as the recorder does on its timer, closed with a footer."""
    writer = RecordingWriter(path, compression=compression)
    rng = np.random.default_rng(0)
    for i in range(frames):
        t = T0 + i * 33_000_000
        messages = [("traces", {"dff": rng.random(neurons, dtype=np.float32)}, source, i),
                    ("tail", {"angles": rng.random(3, dtype=np.float32)}, source, i)]
        if plans and i % 5 == 0:
            messages.append(("stim.plan", {"targets": np.array([1, 2], np.int32),
                                           "power_mw": np.full(2, 5.0, np.float32)},
                             "planner", i // 5))
        for topic, arrays, src, seq in messages:
            writer.add(topic, wire_frames(topic, arrays, {}, i, t, seq, source=src), t, t, seq)
        if i % flush_every == flush_every - 1:
            writer.flush()
    writer.add_array("positions", rng.random((neurons, 3)).astype(np.float32))
    writer.close()
    return path


_FOLDER = Path(tempfile.mkdtemp(prefix="rig-faults-"))
WHOLE = write_recording(_FOLDER / "whole.mcap").read_bytes()
WHOLE_ZSTD = write_recording(_FOLDER / "zstd.mcap", compression="zstd").read_bytes()


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


def test_a_damaged_length_that_still_fits_the_file_hides_nothing(tmp_path):
    import struct

    data = bytearray(WHOLE)
    (header_length,) = struct.unpack_from("<Q", data, 9)
    metadata = 8 + 9 + header_length  # the record after the header: the 'rig' metadata
    struct.pack_into("<Q", data, metadata + 1, len(data) // 2)  # spans half the chunks
    info = summarize(damaged(tmp_path, data))
    assert info["messages"] == 120 and info["corrupt"] and not info["complete"]


def test_a_damaged_data_end_length_is_not_complete(tmp_path):
    # The one length no checksum covers (found by an exhaustive flip of every byte).
    data = bytearray(WHOLE)
    data[WHOLE.rindex(b"\x0f\x04" + bytes(7)) + 1] ^= 0xD1
    assert not summarize(damaged(tmp_path, data))["complete"]


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


def test_a_damaged_first_chunk_loses_only_its_own_messages(tmp_path):
    # The first chunk also holds the channel records; the summary's copies stand in for them.
    data = bytearray(WHOLE)
    data[data.index(b"traces") + 1] ^= 0x20
    info = summarize(damaged(tmp_path, data))
    assert info["messages"] == 100 and sum(info["lost"].values()) == 0  # lost before seq 0
    assert info["corrupt"] and not info["complete"]


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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fraction=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_inspect_finds_any_flipped_byte_in_a_compressed_file(fraction, mask):
    data = bytearray(WHOLE_ZSTD)
    data[int(fraction * len(data))] ^= mask
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


@pytest.fixture
def full_disk(tmp_path):
    """A folder where writes past 1 MiB fail: a 1 MiB tmpfs where one can be mounted (root),
    elsewhere this process's file size limit (RLIMIT_FSIZE, SIGXFSZ ignored)."""
    import resource
    import signal
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if mounted:
        yield folder
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        yield folder
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_keeps_the_earlier_summary_and_says_so(full_disk):
    from rig.recording.files import atomic_write_bytes

    target = full_disk / "summary.json"
    atomic_write_bytes(target, b'{"frames": 10}')
    with pytest.raises(OSError, match=r"cannot write .*summary\.json: .*earlier file.* kept"):
        atomic_write_bytes(target, bytes(2 << 20))
    assert target.read_bytes() == b'{"frames": 10}'
    assert [p.name for p in full_disk.iterdir()] == ["summary.json"]  # no partial file left


def test_the_supervisor_summary_is_written_whole_or_not_at_all(full_disk):
    from rig import config as cfg
    from rig.supervisor import Supervisor

    nodes = {"source": {"class": "rig.selftest:Source"}}  # never started here
    sup = Supervisor(cfg.parse({"run": {}, "nodes": nodes}), run_dir=full_disk)
    sup.report()
    before = (full_disk / "summary.json").read_bytes()
    sup.stop_reason = "x" * (2 << 20)  # a report too big for the disk
    with pytest.raises(OSError, match="summary.json"):
        sup.report()
    assert (full_disk / "summary.json").read_bytes() == before


def test_a_recorder_whose_disk_fills_fails_its_node_and_keeps_what_it_flushed(full_disk, proxy):
    from rig.bus import Endpoints, Publisher, Subscriber, wait_connected
    from rig.node import NodeSpec
    from rig.recording.recorder import Recorder

    spec = NodeSpec("recorder", "rig.recording.recorder:Recorder", {"flush_s": 0.05},
                    Endpoints(proxy.pub, proxy.sub, ""), str(full_disk))
    node = Recorder(spec, Publisher(proxy.pub, "recorder"))
    node.setup()
    pub = Publisher(proxy.pub, "fish")
    probe = Subscriber(proxy.sub, ())
    wait_connected(pub, probe, "_hello.test")
    probe.close()
    try:
        for i in range(200):  # 200 x 64 kB: far more than the disk holds
            pub.publish("traces", {"dff": np.zeros(16_000, np.float32)}, frame=i)
            if node.failure:
                break
            node._thread.join(0.01)  # let the writer keep up with the publisher
        node._thread.join(10)
        assert not node._thread.is_alive() and node.failure
        assert "No space left" in node.failure or "too large" in node.failure
        with pytest.raises(SystemExit, match="recorder: recording stopped after"):
            node.step()  # the runtime ends the process: the supervisor restarts it
        assert node.summary()["failure"] == node.failure
    finally:
        node.teardown()
        node._pub.close()
        pub.close()
    info = summarize(node.path)
    assert not info["complete"] and info["messages"] >= node.flushed > 0


def replayed_run(tmp_path, original, *nodes, args=()):
    """`rig replay ORIGINAL --speed max` with the replay node, the recorder and ``nodes``;
    returns the re-recording's figures and (source, topic) of each message in it."""
    out = tmp_path / "run"
    assert main(["replay", str(original), "--speed", "max", "--config",
                 str(replay_config(tmp_path, *nodes)), "--out", str(out), *args]) == 0
    streams = [(header_of(e).source, e.topic)
               for e in RecordingReader(out / "session.mcap").entries()]
    return summarize(out / "session.mcap"), streams


def test_a_replay_beside_a_live_publisher_of_the_same_name_logs_no_false_losses(tmp_path):
    # The recording's traces came from a node named "source"; the loop replaying it runs a
    # live node of that name publishing traces too: their sequence numbers must not mix.
    original = write_recording(tmp_path / "o.mcap", source="source")
    live = '[nodes.source]\nclass = "rig.selftest:Source"\nn_neurons = 8\nrate_hz = 200\n'
    info, streams = replayed_run(tmp_path, original, live)
    assert info["recorder"]["lost"] == 0 and info["lost"] == {}
    assert streams.count(("replay:source", "traces")) == 60
    assert ("source", "traces") in streams  # the live node was recorded alongside


def test_replay_never_resends_stimulation_commands_to_an_armed_slm(tmp_path):
    original = write_recording(tmp_path / "o.mcap", plans=True)
    slm = '[nodes.slm]\nclass = "stim.slm_node:SLM"\nmin_interval_s = 0.0\n'
    armed = tmp_path / "armed"
    armed.mkdir()
    info, streams = replayed_run(armed, original, slm, args=["--set", "run.arm_on_start=true"])
    assert streams.count(("replay:fish", "traces")) == 60
    assert not any(topic in ("stim.plan", "stim.fired") for _, topic in streams)


def test_replay_resends_stimulation_commands_only_when_asked():
    from rig.recording.replay import Replay

    def wanted(**settings):
        replay = Replay.__new__(Replay)
        replay.settings = Replay.Settings(path="x", **settings)
        return replay._wanted("stim.plan")

    assert not wanted() and not wanted(topics=["stim"]) and wanted(resend_stim=True)


def test_a_killed_recorder_restarts_and_the_gap_is_in_the_summary_and_in_inspect(tmp_path,
                                                                                 capsys):
    import os
    import signal

    from test_recording_crash import recorder_run

    from rig.recording.format import run_files

    sup = recorder_run(tmp_path, rate_hz=200)
    try:
        sup.start()
        assert sup.wait_for(lambda s: s.stats("recorder").get("flushed", 0) >= 40)
        first = sup.nodes["recorder"].process
        os.kill(first.pid, signal.SIGKILL)
        # restarted into session-1.mcap, and recording again
        assert sup.wait_for(lambda s: s.nodes["recorder"].process is not first
                            and s.stats("recorder").get("recorded", 0) >= 20
                            and s.nodes["recorder"].status == "running")
    finally:
        sup.shutdown()
    summary = sup.report()["summaries"]["recorder"]
    files = run_files(tmp_path / "run")
    assert [f.name for f in files] == ["session.mcap", "session-1.mcap"]
    carried = {}
    infos = [summarize(f, carried) for f in files]
    assert not infos[0]["complete"] and "no footer" in infos[0]["problem"]
    gap = infos[1]["lost"]["source traces"]
    assert gap > 0 and not infos[1]["complete"]
    # what the restarted recorder reported counts at least that gap (its state file may
    # lag its file by one flush: it never under-reports)
    assert summary["messages lost"] >= gap
    assert main(["inspect", str(tmp_path / "run")]) == 3
    assert f"lost {gap} message(s) of 'traces' from 'source'" in capsys.readouterr().out
    # the run folder reads as one session: both files, in order
    traces = [header_of(e).seq for f in files for e in RecordingReader(f).entries({"traces"})]
    assert read_session(tmp_path / "run").n_frames == len(traces)
    assert traces == sorted(traces)


def one_line_error(capsys, prefix):
    err = capsys.readouterr().err.strip()
    assert err.startswith(prefix) and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv", [["map", "nope.mcap"], ["train", "nope.mcap", "--out", "d"],
                                  ["eval", "nope.mcap", "--baselines"]])
def test_a_missing_session_is_one_line_naming_it(argv, capsys):
    assert main(argv) == 2
    assert "nope.mcap: no such file or folder" in one_line_error(capsys, f"rig {argv[0]}: ")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_an_unreadable_behaviour_file_is_one_line_naming_it(tmp_path, capsys, command):
    from tests.test_recording_import import write_suite2p

    write_suite2p(tmp_path)
    (tmp_path / "behaviour.csv").write_bytes(b"time_s,seg0\n\xff\xfe\x00garbage\n")
    extra = ["--out", str(tmp_path / "d")] if command == "train" else ["--baselines"]
    assert main([command, str(tmp_path), *extra]) == 2
    assert "behaviour.csv: cannot read the behaviour file" in one_line_error(
        capsys, f"rig {command}: ")


@pytest.fixture(scope="module")
def simulated_export(tmp_path_factory):
    """`rig simulate` (clock from 0 s, fewer frames than neurons, stimulations), then
    `rig export --nwb` without an age: the cases nwbinspector called critical."""
    folder = tmp_path_factory.mktemp("export")
    mcap, nwb = folder / "sim.mcap", folder / "sim.nwb"
    assert main(["simulate", "--out", str(mcap), "--neurons", "150", "--duration", "10",
                 "--rate", "10", "--stim-every", "5", "--ensemble-size", "10"]) == 0
    assert main(["export", str(mcap), "--nwb", str(nwb)]) == 0
    return mcap, nwb


def test_an_export_has_no_critical_nwbinspector_finding(simulated_export):
    import nwbinspector

    _, nwb = simulated_export
    findings = [f for f in nwbinspector.inspect_nwbfile(nwbfile_path=str(nwb))
                if f.importance.name in ("CRITICAL", "PYNWB_VALIDATION", "ERROR")
                or f.check_function_name == "check_session_start_time_old_date"]
    assert not findings, findings


def test_an_export_reads_back_for_map_train_and_replay(simulated_export, tmp_path, capsys):
    mcap, nwb = simulated_export
    a, b = read_session(mcap), read_session(nwb)  # what rig train and rig map read
    assert a.n_frames < a.n_neurons
    np.testing.assert_array_equal(b.traces, a.traces)
    np.testing.assert_array_equal(b.tail, a.tail)
    np.testing.assert_array_equal(b.stim_frame, a.stim_frame)
    np.testing.assert_array_equal(b.stim_targets, a.stim_targets)
    np.testing.assert_allclose(b.positions, a.positions, rtol=1e-6)
    capsys.readouterr()
    assert main(["map", str(mcap), "--out", str(tmp_path / "a.npz")]) == 0
    assert main(["map", str(nwb), "--out", str(tmp_path / "b.npz")]) == 0
    from_mcap, from_nwb = [line for line in capsys.readouterr().out.splitlines()
                           if "stimulations used" in line]
    assert from_nwb == from_mcap and from_nwb.startswith(f"{len(a.stim_frame)} stimulations")
    info, streams = replayed_run(tmp_path, nwb)
    assert info["topics"]["traces"]["count"] == a.n_frames
    assert info["topics"]["stim.fired"]["count"] == len(a.stim_frame)


@pytest.mark.slow
def test_rig_train_fits_on_an_export(simulated_export, tmp_path):
    _, nwb = simulated_export
    assert main(["train", str(nwb), "--model", "gru", "--random-init", "--epochs", "1",
                 "--out", str(tmp_path / "d")]) == 0


def test_the_recorder_closes_last_and_records_every_node_ending(tmp_path):
    # A slow node ends well into the shutdown (its queue first): its closing heartbeat, sent
    # after the other nodes', is still recorded, and the file gets its footer.
    from rig import config as cfg
    from rig.messages import decode
    from rig.supervisor import Supervisor

    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"source": {"class": "rig.selftest:Source", "n_neurons": 10, "rate_hz": 4},
                     "slow": {"class": "rig.selftest:Sink", "delay_ms": 300},
                     "recorder": {"class": "rig.recording.recorder:Recorder"}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        assert sup.wait_for(lambda s: s.stats("slow").get("frames", 0) >= 3)
    finally:
        sup.shutdown()
    reader = RecordingReader(tmp_path / "run" / "session.mcap")
    endings = [decode([b"heartbeat", *e.frames]).source for e in reader.entries({"heartbeat"})
               if decode([b"heartbeat", *e.frames]).meta.get("status") == "exited"]
    assert reader.complete
    assert endings == ["source", "slow"]  # (the recorder's own is sent after it closed)
