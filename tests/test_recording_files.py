"""Sessions on disk: exact round trip, and clear errors for damaged or foreign files."""
import msgspec
import numpy as np
import pytest

from rig.messages import Header
from rig.recording import RecordingError, read_session, write_session
from rig.recording import format as fmt
from rig.recording.format import RecordingReader, RecordingWriter, pack_frames, unpack_frames
from rig.recording.inspect import summarize
from rig.recording.sessions import session_messages, wire_frames
from rig.session import Session

T0 = 1_700_000_000_000_000_000


def make_session(T=40, N=12, S=5, seed=0):
    rng = np.random.default_rng(seed)
    return Session(
        traces=rng.standard_normal((T, N)).astype(np.float32),
        t_ns=(T0 + np.arange(T) * 33_333_333).astype(np.int64), frame_rate_hz=30.0,
        tail=rng.standard_normal((T, S)).astype(np.float32),
        stimulus=(np.arange(T) // 10 % 3).astype(np.int8), stimulus_names=["dark", "left", "right"],
        positions=rng.random((N, 3)).astype(np.float32),
        regions=rng.integers(0, 3, N).astype(np.int16), region_names=["tectum", "hb", "cb"],
        stim_frame=np.array([5, 20], dtype=np.int64),
        stim_targets=np.array([[1, 2, -1], [3, 4, 5]], dtype=np.int32),
        camera_t_ns=(T0 + np.arange(4 * T) * 8_333_333).astype(np.int64),
        camera_tail=rng.standard_normal((4 * T, S)).astype(np.float32),
        truth={"weights": rng.random((N, N)), "motor": np.arange(N) < 3},
        meta={"seed": seed, "simulator": "test"})


@pytest.fixture
def recording(tmp_path):
    return write_session(tmp_path / "s.mcap", make_session())


def write_chunked(path, session=None):
    """A recording flushed every 20 messages, as the recorder does on its timer: one chunk
    per flush."""
    writer = RecordingWriter(path)
    for i, (t, topic, frames) in enumerate(session_messages(session or make_session())):
        writer.add(topic, frames, t, t, i)
        if i % 20 == 19:
            writer.flush()
    writer.close()
    return path


def test_a_written_session_reads_back_exactly(recording):
    a, b = make_session(), read_session(recording)
    for name in ("traces", "t_ns", "tail", "stimulus", "positions", "regions", "stim_frame",
                 "stim_targets", "camera_t_ns", "camera_tail"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    assert (b.frame_rate_hz, b.stimulus_names, b.region_names) == \
        (a.frame_rate_hz, a.stimulus_names, a.region_names)
    assert b.truth.keys() == a.truth.keys()
    np.testing.assert_array_equal(b.truth["weights"], a.truth["weights"])
    assert b.meta["seed"] == 0 and b.meta["simulator"] == "test"


def test_frames_pack_and_unpack_byte_for_byte():
    frames = [b"header", np.arange(5, dtype=np.float32).tobytes(), b""]
    assert [bytes(f) for f in unpack_frames(pack_frames(frames))] == frames
    with pytest.raises(ValueError, match="frame lengths"):
        unpack_frames(pack_frames(frames)[:-3])


def test_session_messages_are_in_time_order_and_valid():
    messages = list(session_messages(make_session()))
    times = [t for t, _, _ in messages]
    assert times == sorted(times)
    topics = {topic for _, topic, _ in messages}
    assert topics == {"traces", "tail", "stimulus", "stim.fired", "behaviour"}


def test_a_file_cut_short_is_read_up_to_its_last_whole_record(tmp_path, caplog):
    data = write_chunked(tmp_path / "whole.mcap").read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    session = read_session(cut)
    assert 0 < session.n_frames < 40
    assert "no footer" in session.meta["recovered"] and "cut.mcap" in caplog.text


def test_a_file_cut_before_its_first_record_is_refused_by_name(recording):
    cut = recording.with_name("stub.mcap")
    cut.write_bytes(recording.read_bytes()[:5])
    with pytest.raises(RecordingError, match=r"stub\.mcap: .*(magic|empty)"):
        read_session(cut)


def test_a_corrupt_chunk_is_skipped_and_reported_and_the_rest_recovered(tmp_path):
    data = bytearray(write_chunked(tmp_path / "s.mcap").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(bytes(data))
    session = read_session(bad)
    assert 0 < session.n_frames < 40
    assert "damaged region(s) skipped (bytes " in session.meta["recovered"]
    info = summarize(bad)
    assert not info["complete"] and info["corrupt"] and sum(info["lost"].values()) > 0


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "notes.mcap"
    path.write_text("these are not the frames you are looking for")
    with pytest.raises(RecordingError, match="notes.mcap: not an MCAP recording"):
        read_session(path)


def test_a_recording_of_a_newer_format_asks_for_an_upgrade(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 2)
    writer = RecordingWriter(tmp_path / "future.mcap")
    writer.close()
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 1)
    with pytest.raises(RecordingError, match="future.mcap: recording format version 2 .*upgrade"):
        read_session(tmp_path / "future.mcap")


def test_a_message_of_a_newer_schema_is_refused_by_name(tmp_path):
    writer = RecordingWriter(tmp_path / "newer.mcap")
    header = msgspec.msgpack.encode(Header(2, "fish", 0, 0, T0, T0, (), {}))
    writer.add("traces", [header], T0, T0)
    writer.close()
    with pytest.raises(RecordingError, match="newer.mcap: traces: schema version 2.*upgrade"):
        read_session(tmp_path / "newer.mcap")


def test_a_recording_is_never_overwritten_by_the_writer(recording):
    before = recording.read_bytes()
    with pytest.raises(RecordingError, match="exists; a recording is never overwritten"):
        RecordingWriter(recording)
    assert recording.read_bytes() == before


def test_a_failed_write_leaves_the_previous_file_whole(recording):
    before = recording.read_bytes()
    broken = make_session()
    broken.truth = {"objects": np.array([{"a": 1}], dtype=object)}  # cannot be stored
    with pytest.raises(ValueError):
        write_session(recording, broken)
    assert recording.read_bytes() == before
    assert sorted(p.name for p in recording.parent.iterdir()) == ["s.mcap"]


def test_inspect_counts_topics_and_lost_messages(tmp_path):
    writer = RecordingWriter(tmp_path / "gaps.mcap")
    for seq in (0, 1, 2, 5, 6):  # 3 and 4 were dropped upstream
        t = T0 + seq * 10_000_000
        writer.add("traces", wire_frames("traces", {"dff": np.zeros(3, np.float32)}, {}, seq,
                                         t, seq), t, t, seq)
    writer.close()
    info = summarize(tmp_path / "gaps.mcap")
    assert info["topics"]["traces"]["count"] == 5
    assert not info["complete"]  # the footer is there, but two messages are not
    assert info["lost"] == {"session traces": 2} and info["topics"]["traces"]["lost"] == 2
    assert info["topics"]["traces"]["max_gap_ms"] == pytest.approx(30.0)


def test_a_session_without_traces_is_refused(tmp_path):
    writer = RecordingWriter(tmp_path / "empty.mcap")
    writer.close()
    with pytest.raises(RecordingError, match="empty.mcap: no 'traces' messages"):
        read_session(tmp_path / "empty.mcap")


def test_reader_reports_attachments_and_metadata(recording):
    reader = RecordingReader(recording)
    assert sum(1 for _ in reader.entries()) > 0
    assert "truth/weights.npy" in reader.attachments and reader.complete


def test_compressed_recordings_read_back_the_same(tmp_path):
    path = write_session(tmp_path / "z.mcap", make_session(), compression="zstd")
    np.testing.assert_array_equal(read_session(path).traces, make_session().traces)


def test_inspect_says_a_cut_file_is_incomplete_and_what_it_recovered(tmp_path):
    from rig.recording.inspect import format_summary

    data = write_chunked(tmp_path / "whole.mcap").read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: len(data) // 2])
    text = format_summary(summarize(tmp_path / "cut.mcap"))
    assert "INCOMPLETE (no footer" in text and "recovered" in text


def test_repeated_frame_indices_and_a_late_start_keep_rows_aligned(tmp_path):
    """A looped replay repeats frame indices; a recording may start mid-run: per-frame data
    and stimulations go to the row of their own traces."""
    from rig.recording.sessions import read_recording, wire_frames

    writer = RecordingWriter(tmp_path / "loop.mcap")
    t, seq = 1_000, 0
    for lap in range(2):
        for frame in (100, 101):  # frames 100, 101 twice: the recording began at 100
            value = float(10 * lap + frame - 100)
            for topic, arrays, meta in (
                    ("traces", {"dff": np.full(3, value, np.float32)}, {}),
                    ("tail", {"angles": np.full(2, value, np.float32)}, {}),
                    ("stimulus", {}, {"code": lap, "name": ""})):
                writer.add(topic, wire_frames(topic, arrays, meta, frame, t, seq), t, t, seq)
                t, seq = t + 1_000, seq + 1
    writer.add("stim.fired", wire_frames("stim.fired", {"targets": np.array([1], np.int32)},
                                         {}, 101, t, seq), t, t, seq)
    writer.close()
    s = read_recording(tmp_path / "loop.mcap")
    assert s.traces[:, 0].tolist() == [0, 1, 10, 11]
    assert s.tail[:, 0].tolist() == [0, 1, 10, 11]
    assert s.stimulus.tolist() == [0, 0, 1, 1]
    assert s.stim_frame.tolist() == [3]  # the newest row of frame 101
