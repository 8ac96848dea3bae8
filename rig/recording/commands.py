"""``rig replay``, ``rig inspect`` and ``rig export`` (light: heavy imports inside each command)."""
from __future__ import annotations

import argparse
import sys

from rig.argtypes import positive_float


def speed(text: str) -> float:
    """``max`` -> 0 (as fast as possible), else a factor > 0."""
    if text == "max":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: a factor > 0 (1 = real time) or 'max'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0, or 'max'")
    return value


def register(sub) -> None:
    p = sub.add_parser("replay", help="replay a recorded or imported session through the loop",
                       description="Publish SESSION (a .mcap recording, a run folder, a suite2p "
                                   "folder or an .nwb file) on the bus with its original timing "
                                   "and run the loop of the replay config on it.")
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--speed", type=speed, default=1.0, metavar="1|N|max",
                   help="1 = real time (default), N = N times faster, max = as fast as possible")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.add_argument("--resend-stim", action="store_true",
                   help="also replay the recorded stimulation commands (stim.plan): an armed "
                        "SLM in the loop fires them again (default: never replayed)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="the loop to run (default: built-in 'replay'); its [nodes.replay] "
                        "gets SESSION, --speed and --loop")
    p.add_argument("--duration", type=positive_float, metavar="SECONDS",
                   help="stop after this long (default: at the end of the session)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run folder")
    p.set_defaults(func=_replay)

    p = sub.add_parser("inspect", help="topics, counts, rates and gaps of a recording",
                       description="Summarise a recording: per topic its message count, rate, "
                                   "size, lost messages and longest gap; per source and topic "
                                   "the messages missing from the sequence numbers; for a file "
                                   "cut short or damaged, what was recovered and what skipped. "
                                   "Exit status 3 when a file is not complete.")
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("export", help="write a session as NWB",
                       description="Convert SESSION (recording, suite2p folder, NWB) to an NWB "
                                   "file that pynwb reads back (ophys DfOverF, behaviour).")
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--nwb", required=True, metavar="OUT.nwb")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.nwb if it exists")
    p.add_argument("--subject-id", help="the fish's identifier (NWB Subject)")
    p.add_argument("--age", help="ISO 8601 duration, e.g. P6D for 6 days post fertilisation")
    p.add_argument("--species", help="default: Danio rerio")
    p.set_defaults(func=_export)


def _replay(args) -> int:
    from pathlib import Path

    from rig import config as cfg
    from rig.cli import supervise
    from rig.recording.format import RecordingError
    from rig.supervisor import Supervisor

    session = Path(args.session).expanduser()
    if not session.exists():
        print(f"rig replay: {session}: no such file or folder", file=sys.stderr)
        return 2
    try:  # fail here with the file's own error, not later as "node 'replay' failed"
        from rig.recording.replay import open_messages

        if next(open_messages(session), None) is None:
            raise RecordingError(f"{session}: holds no messages to replay")
    except (RecordingError, ValueError, OSError) as exc:
        print(f"rig replay: {exc}", file=sys.stderr)
        return 2
    overrides = [f"nodes.replay.path={_toml_str(str(session.resolve()))}",
                 f"nodes.replay.speed={args.speed}",
                 f"nodes.replay.loop={'true' if args.loop else 'false'}",
                 f"nodes.replay.resend_stim={'true' if args.resend_stim else 'false'}", *args.set]
    try:
        config = cfg.load(args.config or cfg.builtin("replay"), overrides)
    except cfg.ConfigError as exc:
        print(f"rig replay: config error: {exc}", file=sys.stderr)
        return 2
    if "replay" not in config.nodes:
        print(f"rig replay: {config.source} has no [nodes.replay] table "
              "(class = \"rig.recording.replay:Replay\")", file=sys.stderr)
        return 2
    return supervise(Supervisor(config, "local", args.out), args.duration or 0.0, "rig replay")


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _inspect(args) -> int:
    import json
    from pathlib import Path

    from rig.recording.format import RecordingError
    from rig.recording.format import run_files
    from rig.recording.inspect import format_summary, summarize, summarize_session

    path = Path(args.session).expanduser()
    complete = True
    try:
        if path.suffix == ".mcap" or (path.is_dir() and any(path.glob("*.mcap"))):
            carried = {}  # sequence numbers carry over the files of one run
            for file in [path] if path.suffix == ".mcap" else run_files(path):
                info = summarize(file, carried)
                complete = complete and info["complete"]
                print(json.dumps(info, indent=2) if args.json else format_summary(info))
        else:
            print(summarize_session(path))
    except (RecordingError, ValueError, OSError) as exc:
        print(f"rig inspect: {exc}", file=sys.stderr)
        return 1
    return 0 if complete else 3


def _export(args) -> int:
    from pathlib import Path

    from rig.recording.format import RecordingError

    try:
        from rig.recording.export import export_nwb
        from rig.recording.sessions import read_session

        session = read_session(Path(args.session).expanduser())
        for key in ("subject_id", "age", "species"):
            if getattr(args, key):
                session.meta[key] = getattr(args, key)
        out = export_nwb(session, Path(args.nwb), overwrite=args.overwrite)
    except (RecordingError, ValueError, OSError) as exc:
        print(f"rig export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
