"""``rig inspect SESSION``: what a recording holds, and what it lost.

Per topic: message count, first/last time, rate, bytes and the longest silence. Losses come
from sequence numbers, per publishing source and topic (every bus message carries one), so a
gap is found wherever it happened: dropped upstream, while a killed recorder restarted (the
files of one run are read in order and a stream's numbers carry over from one to the next),
or in a damaged chunk that was skipped. A file is "complete" only with its footer, both
checksums right, no damaged record and no gap.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np

from rig.messages import Header
from rig.recording.format import RecordingReader

_header = msgspec.msgpack.Decoder(Header)


def summarize(path: Path, carried: dict | None = None) -> dict:
    """Figures of one recording as plain data (``rig inspect --json`` prints them).

    Parameters
    ----------
    path : the ``.mcap`` file.
    carried : next expected sequence number per (source, topic), from the run's earlier
        files; updated in place, so the gap while a recorder restarted is counted.
    """
    path = Path(path)
    reader = RecordingReader(path)
    times = defaultdict(list)  # topic -> log times (ns)
    sizes = defaultdict(int)
    next_seq = carried if carried is not None else {}
    lost = defaultdict(int)  # (source, topic) -> messages missing from the sequence
    unreadable = 0
    for entry in reader.entries():
        try:
            header = _header.decode(entry.frames[0])
        except (msgspec.DecodeError, msgspec.ValidationError):
            unreadable += 1  # the file's checksum held: written so by its publisher
            continue
        times[entry.topic].append(entry.log_time)
        sizes[entry.topic] += sum(f.nbytes for f in entry.frames)
        key = (header.source, entry.topic)
        expected = next_seq.get(key)
        if expected is not None and header.seq > expected:
            lost[key] += header.seq - expected
        next_seq[key] = header.seq + 1
    recorder = reader.json("recorder", {}) or {}
    for stream, n in (recorder.get("skipped") or {}).items():  # recording was off: not lost
        key = tuple(stream.split(" ", 1))
        if key in lost:
            lost[key] = max(0, lost[key] - int(n))
    lost = {key: n for key, n in lost.items() if n}
    topics = {}
    for topic, t in sorted(times.items()):
        t = np.asarray(t, dtype=np.int64)
        span = (t.max() - t.min()) / 1e9 if len(t) > 1 else 0.0
        gaps = np.diff(np.sort(t)) / 1e6 if len(t) > 1 else np.zeros(1)
        topics[topic] = {"count": len(t), "rate_hz": (len(t) - 1) / span if span else 0.0,
                         "MB": sizes[topic] / 1e6,
                         "lost": sum(n for (_, tp), n in lost.items() if tp == topic),
                         "max_gap_ms": float(gaps.max()), "start_ns": int(t.min()),
                         "end_ns": int(t.max())}
    start = min((v["start_ns"] for v in topics.values()), default=0)
    end = max((v["end_ns"] for v in topics.values()), default=0)
    rig = reader.metadata.get("rig", {})
    return {"file": str(path), "bytes": path.stat().st_size,
            "complete": reader.complete and not lost and not unreadable,
            "problem": reader.problem, "corrupt": list(reader.corrupt),
            "messages": reader.messages, "unreadable_headers": unreadable,
            "lost": {f"{source} {topic}": n for (source, topic), n in sorted(lost.items())},
            "recorder": recorder,
            "duration_s": (end - start) / 1e9, "written_by": rig.get("rig", "?"),
            "format_version": rig.get("format_version", "?"), "topics": topics,
            "metadata": sorted(reader.metadata), "attachments": sorted(reader.attachments)}


def format_summary(info: dict) -> str:
    lines = [f"{info['file']}  ({info['bytes'] / 1e6:.2f} MB, written by rig "
             f"{info['written_by']}, format {info['format_version']})"]
    total_lost = sum(info["lost"].values())
    if info["complete"]:
        lines.append(f"  complete: {info['messages']} messages over {info['duration_s']:.2f} s, "
                     "no gaps")
    else:
        lines.append(f"  INCOMPLETE ({info['problem'] or 'gaps in the sequence numbers'})")
        lines.append(f"  recovered {info['messages']} messages over {info['duration_s']:.2f} s; "
                     f"{total_lost} missing from the sequence numbers")
    if info["unreadable_headers"]:
        lines.append(f"  {info['unreadable_headers']} message(s) with an unreadable header")
    for stream, n in info["lost"].items():
        source, topic = stream.split(" ", 1)
        lines.append(f"  lost {n} message(s) of {topic!r} from {source!r}")
    lines += ["", f"  {'topic':<16}{'count':>9}{'rate Hz':>10}{'MB':>10}{'lost':>7}"
                  f"{'max gap ms':>12}"]
    for topic, t in info["topics"].items():
        lines.append(f"  {topic:<16}{t['count']:>9}{t['rate_hz']:>10.2f}{t['MB']:>10.3f}"
                     f"{t['lost']:>7}{t['max_gap_ms']:>12.1f}")
    if info["metadata"]:
        lines += ["", f"  metadata: {', '.join(info['metadata'])}"]
    if info["attachments"]:
        lines.append(f"  attachments: {', '.join(info['attachments'])}")
    return "\n".join(lines)


def summarize_session(path: Path) -> str:
    """One paragraph on a session that is not a Rig recording (suite2p folder, NWB)."""
    from rig.recording.sessions import read_session

    s = read_session(path)
    duration = (s.t_ns[-1] - s.t_ns[0]) / 1e9 if s.n_frames > 1 else 0.0
    return (f"{path}: {s.n_frames} frames x {s.n_neurons} neurons at {s.frame_rate_hz:.2f} Hz "
            f"({duration:.1f} s), tail {s.tail.shape[1]} segment(s), "
            f"source {s.meta.get('source', '?')}")
