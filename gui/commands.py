"""``rig gui``: the live dashboard (imports Qt only when the command runs)."""
from __future__ import annotations

import argparse
import sys

from rig.argtypes import positive_float


def window_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` in pixels, each at least 640 x 480."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected WIDTHxHEIGHT, e.g. 1366x768") \
            from None
    if width < 640 or height < 480:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 640x480")
    return width, height


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gui", help="open the live dashboard (starts the loop, or attaches to one)",
        description="Open the dashboard. With --config/--sim/--replay it starts that loop "
                    "(as `rig run` would) and stops it when the window closes; with --attach "
                    "it shows a loop already running here or on another machine and leaves "
                    "it running. Without a source it runs the simulated fish (--sim).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sim", action="store_true",
                     help="closed loop on a simulated fish (built-in config 'sim'; default)")
    src.add_argument("--replay", metavar="SESSION", help="replay a recorded session")
    src.add_argument("--selftest", action="store_true",
                     help="bus self-test loop (no science; checks the dashboard itself)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="the loop's config (with --attach: only its [bus] keys are used)")
    p.add_argument("--attach", metavar="ENDPOINTS_JSON",
                   help="attach to a running loop: its run folder, endpoints.json, or JSON text")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a config value (repeatable; VALUE is TOML)")
    p.add_argument("--out", metavar="DIR", help="parent folder of the run (default: the "
                                                "config's run.out_dir)")
    p.add_argument("--fps", type=positive_float, default=30.0, help="redraw rate (default 30)")
    p.add_argument("--speed", type=positive_float, default=1.0,
                   help="with --replay: 1 = real time, N = N times faster (default 1)")
    p.add_argument("--size", type=window_size, action="append", metavar="WxH",
                   help="window size (default 1800x1050); with --screenshot, repeat it for "
                        "one picture per size (OUT-WxH.png after the first)")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="save a screenshot of the window after --after seconds, then close")
    p.add_argument("--after", type=positive_float, default=20.0, metavar="SECONDS",
                   help="when to take the --screenshot (default 20)")
    p.set_defaults(func=_gui)


def _gui(args) -> int:
    import os
    from pathlib import Path

    headless = (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
                and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))
    if headless and args.screenshot:
        # A screenshot needs no screen: render offscreen (set before Qt is imported).
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    elif headless:
        # Qt would abort with an xcb error; say what to do instead.
        print("rig gui: no display here (DISPLAY and WAYLAND_DISPLAY are unset). Run it on the "
              "rig's screen, use --screenshot OUT.png for an image, or run the loop headless "
              "(`rig run`) and attach a dashboard elsewhere with --attach.", file=sys.stderr)
        return 2
    from gui.launch import LaunchError, attach_secret, plan

    try:
        endpoints, launcher, keys = plan(args)
        secret = attach_secret(args.attach) if args.attach else None
    except LaunchError as exc:
        print(f"rig gui: {exc}", file=sys.stderr)
        return 2
    from gui.launch import run_window

    return run_window(endpoints, launcher, keys, args.fps, args.screenshot, args.after,
                      args.size or [(1800, 1050)],
                      f"{Path(args.replay).name} at {args.speed:g}x" if args.replay else "",
                      secret)
