"""A ``rig.session.Session`` to and from bus messages and a recording on disk.

``session_messages`` turns a session into the messages a live loop would have sent (so
``rig replay`` plays a simulated or imported session exactly like a recording), and
``write_session`` stores those messages in the recorder's format. ``read_session`` reads a
recording (live or written here) back, and dispatches suite2p folders and NWB files to
``rig.recording.importers``.

Topic mapping: ``traces`` (dff per frame), ``tail`` (angles per frame), ``stimulus``
(meta ``name``, ``code`` per frame), ``stim.fired`` (targets, at its frame), ``behaviour``
(camera-rate angles), ``truth``/``sim.truth`` (arrays of ground truth; the files a
simulator leaves in ``RUN_DIR/truth/``, attached by the recorder, take precedence),
``anatomy`` (``positions``, ``regions``, meta ``region_names``). Static arrays of a
written session travel as ``.npy`` attachments (``positions``, ``regions``,
``truth/NAME``).
"""
from __future__ import annotations

import contextlib
import heapq
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from rig.messages import (ANATOMY, BEHAVIOUR, SIM_TRUTH, STIMULUS, STIM_FIRED, TAIL, TRACES, TRUTH,
                          Message, MessageError, decode, encode)
from rig.recording.format import RecordingError, RecordingWriter, npy_array, open_recording
from rig.session import Session

log = logging.getLogger(__name__)

# what read_recording makes a Session of (the rest of a recording is skipped)
_SESSION_TOPICS = frozenset({TRACES, TAIL, STIMULUS, STIM_FIRED, BEHAVIOUR, TRUTH, SIM_TRUTH,
                             ANATOMY})

SOURCE = "session"


def wire_frames(topic: str, arrays: dict, meta: dict, frame: int, t_ns: int, seq: int,
                source: str = SOURCE) -> list:
    """Wire frames (after the topic) of a message sent at ``t_ns`` (header, buffers)."""
    msg = Message(topic, arrays, meta, int(frame), int(t_ns), source, seq)
    return encode(msg, t_send_ns=t_ns)[1:]


def session_messages(session: Session) -> Iterator[tuple[int, str, list]]:
    """(t_ns, topic, frames) of every message of ``session``, in time order."""
    T = session.n_frames
    t_ns = np.asarray(session.t_ns, dtype=np.int64)
    traces = np.asarray(session.traces, dtype=np.float32)
    tail = np.asarray(session.tail, dtype=np.float32)
    names = list(session.stimulus_names)
    streams = []

    def per_frame():
        for i in range(T):
            t = int(t_ns[i])
            yield t, TRACES, wire_frames(TRACES, {"dff": traces[i]}, {}, i, t, i)
            if tail.ndim == 2 and tail.shape[1]:
                yield t, TAIL, wire_frames(TAIL, {"angles": tail[i]}, {}, i, t, i)
            if session.stimulus is not None:
                code = int(session.stimulus[i])
                name = names[code] if 0 <= code < len(names) else str(code)
                yield t, STIMULUS, wire_frames(STIMULUS, {}, {"name": name, "code": code},
                                                 i, t, i)

    streams.append(per_frame())
    if session.stim_frame is not None and session.stim_targets is not None:
        def fired():
            for m, (f, targets) in enumerate(zip(session.stim_frame, session.stim_targets)):
                targets = np.asarray(targets, dtype=np.int32)
                t = int(t_ns[min(int(f), T - 1)])
                yield t, STIM_FIRED, wire_frames(STIM_FIRED,
                                                   {"targets": targets[targets >= 0]}, {},
                                                   int(f), t, m)
        streams.append(fired())
    if session.camera_t_ns is not None and session.camera_tail is not None:
        def camera():
            angles = np.asarray(session.camera_tail, dtype=np.float32)
            for j, t in enumerate(np.asarray(session.camera_t_ns, dtype=np.int64)):
                yield int(t), BEHAVIOUR, wire_frames(BEHAVIOUR, {"angles": angles[j]}, {},
                                                       -1, int(t), j)
        streams.append(camera())
    yield from heapq.merge(*streams, key=lambda item: item[0])


def write_session(path: Path, session: Session, compression: str = "none") -> Path:
    """Write ``session`` as a Rig recording (atomically: a failure leaves no partial file).

    Parameters
    ----------
    path : target ``.mcap`` file; replaced if it exists (the new file is complete first).
    session : the session to store.
    compression : ``"none"`` or ``"zstd"`` chunk compression.
    """
    path = Path(path)
    if path.suffix != ".mcap":
        raise RecordingError(f"{path}: a Rig recording is an .mcap file; name it "
                             f"{path.with_suffix('.mcap').name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    writer = RecordingWriter(partial, compression=compression)
    try:
        writer.add_json("session", {
            "frame_rate_hz": float(session.frame_rate_hz),
            "stimulus_names": list(session.stimulus_names),
            "region_names": list(session.region_names),
            "n_frames": session.n_frames, "n_neurons": session.n_neurons})
        writer.add_json("meta", session.meta)
        for name in ("positions", "regions"):
            value = getattr(session, name)
            if value is not None:
                writer.add_array(name, value)
        for name, value in session.truth.items():
            writer.add_array(f"truth/{name}", np.asarray(value))
        for t, topic, frames in session_messages(session):
            writer.add(topic, frames, t, t)
        writer.close()
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error is the one to report
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    return path


def read_session(path: Path) -> Session:
    """Read a Rig recording (``.mcap`` or a run folder), a suite2p folder or an NWB file."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob("*.mcap")):  # a run folder: its recordings in order, read as one
            return read_recording(path)
        from rig.recording.importers import read_suite2p

        return read_suite2p(path)
    if path.suffix == ".nwb":
        from rig.recording.importers import read_nwb

        return read_nwb(path)
    return read_recording(path)


def read_recording(path: Path) -> Session:
    """A Session from a Rig recording (a file, or a run folder whose restarted recorder wrote
    several, read in order); a file cut short by a crash is read up to its end."""
    reader = open_recording(path)
    # Rows are traces in arrival order. A frame index can repeat (a looped replay, a restarted
    # source), so per-frame data goes to the newest row of its frame; data that arrives
    # before its traces waits in `early`.
    row_of: dict[int, int] = {}
    dff, t_ns, tail_by_row, stim_by_row = [], [], {}, {}
    early: dict[str, dict] = {TAIL: {}, STIMULUS: {}}
    fired_row, fired_targets, cam_t, cam_angles = [], [], [], []
    truth, anatomy = {}, {}
    traces_source = None
    for entry in reader.entries():
        if entry.topic not in _SESSION_TOPICS:
            continue
        try:
            msg = decode([entry.topic.encode(), *entry.frames])
        except MessageError as exc:
            raise RecordingError(f"{path}: {exc}") from None
        if entry.topic == TRACES:
            traces_source = traces_source or msg.source
            if msg.source != traces_source:
                continue  # one imaging source per session; others (a second plane) ignored
            row = row_of[msg.frame] = len(dff)
            dff.append(msg["dff"])
            t_ns.append(msg.t_acq_ns or msg.t_send_ns)
            if msg.frame in early[TAIL]:
                tail_by_row[row] = early[TAIL].pop(msg.frame)
            if msg.frame in early[STIMULUS]:
                stim_by_row[row] = early[STIMULUS].pop(msg.frame)
        elif entry.topic in (TAIL, STIMULUS):
            value = (msg["angles"] if entry.topic == TAIL else
                     (msg.meta.get("code"), str(msg.meta.get("name", ""))))
            row = row_of.get(msg.frame)
            target = tail_by_row if entry.topic == TAIL else stim_by_row
            if row is None:
                early[entry.topic][msg.frame] = value
            else:
                target[row] = value
        elif entry.topic == STIM_FIRED:
            row = row_of.get(msg.frame, len(dff) - 1)  # fired before its frame: the latest
            if row >= 0:
                fired_row.append(row)
                fired_targets.append(msg["targets"])
        elif entry.topic == BEHAVIOUR:
            cam_t.append(msg.t_acq_ns or msg.t_send_ns)
            cam_angles.append(msg["angles"])
        elif entry.topic in (TRUTH, SIM_TRUTH):
            truth.update({k: np.array(v) for k, v in msg.arrays.items()})
        else:
            anatomy = msg
    if reader.problem:
        log.warning("%s: %s", path, reader.problem)
    if not dff:
        raise RecordingError(f"{path}: no 'traces' messages ({reader.messages} message(s) "
                             "in all): nothing to make a session of")
    sizes = {len(x) for x in dff}
    if len(sizes) > 1:
        raise RecordingError(f"{path}: traces change size during the run ({sorted(sizes)} "
                             "neurons); split the recording where the ROI set changed")
    T = len(dff)
    info = reader.json("session", {})
    names = list(info.get("stimulus_names", []))
    session = Session(
        traces=np.stack(dff).astype(np.float32, copy=False),
        t_ns=np.asarray(t_ns, dtype=np.int64),
        frame_rate_hz=float(info.get("frame_rate_hz") or _rate(t_ns)),
        tail=_per_frame(tail_by_row, T),
        stimulus=_stimulus(stim_by_row, T, names) if stim_by_row else None,
        stimulus_names=names,
        region_names=list(info.get("region_names", [])),
        meta=reader.json("meta", {}) or {},
    )
    if fired_row:
        K = max(len(t) for t in fired_targets)
        targets = np.full((len(fired_row), K), -1, dtype=np.int32)
        for m, row in enumerate(fired_targets):
            targets[m, :len(row)] = row
        session.stim_frame = np.asarray(fired_row, dtype=np.int64)
        session.stim_targets = targets
    if cam_t:
        session.camera_t_ns = np.asarray(cam_t, dtype=np.int64)
        session.camera_tail = np.stack(cam_angles).astype(np.float32, copy=False)
    for name, data in reader.attachments.items():
        stem = name.removesuffix(".npy")
        if stem.startswith("truth/"):
            truth[stem[len("truth/"):]] = npy_array(data, f"{path}:{name}")
        elif stem in ("positions", "regions"):
            setattr(session, stem, npy_array(data, f"{path}:{name}"))
    if anatomy:
        for name in ("positions", "regions"):
            if name in anatomy.arrays:
                setattr(session, name, np.array(anatomy.arrays[name]))
        session.region_names = list(anatomy.meta.get("region_names", session.region_names))
    session.truth = truth
    session.meta.setdefault("source", str(path))
    if (created := reader.metadata.get("rig", {}).get("created_ns", "")).isdigit():
        session.meta.setdefault("created_ns", int(created))  # a date, where the clock is not
    if config := reader.json("config"):
        session.meta.setdefault("config", config)
    if reader.problem:
        session.meta["recovered"] = reader.problem
    return session


def _rate(t_ns) -> float:
    if len(t_ns) < 2:
        return 0.0
    step = float(np.median(np.diff(np.asarray(t_ns, dtype=np.int64))))
    return 1e9 / step if step > 0 else 0.0


def _per_frame(by_row: dict, T: int) -> np.ndarray:
    """(T, S) angles per imaging frame; frames without a tail message are NaN."""
    if not by_row:
        return np.zeros((T, 0), dtype=np.float32)
    S = len(next(iter(by_row.values())))
    out = np.full((T, S), np.nan, dtype=np.float32)
    for row, value in by_row.items():
        if len(value) == S:
            out[row] = value
    return out


def _stimulus(by_row: dict, T: int, names: list) -> np.ndarray:
    out = np.full(T, -1, dtype=np.int8)
    for row in range(T):
        code, name = by_row.get(row, (None, ""))
        if code is None and name:
            if name not in names:
                names.append(name)
            code = names.index(name)
        out[row] = -1 if code is None else code
    return out
