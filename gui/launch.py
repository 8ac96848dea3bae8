"""From ``rig gui`` arguments to a running window: which loop, which keys, then Qt's loop."""
from __future__ import annotations

import logging
import signal
from functools import partial
from pathlib import Path

from rig.bus import Endpoints, Keys

log = logging.getLogger(__name__)


class LaunchError(ValueError):
    """The arguments name no loop the dashboard can start or attach to."""


def plan(args) -> tuple[Endpoints | None, object, Keys | None]:
    """(endpoints to attach to, launcher of an owned loop, CURVE keys) for ``rig gui``."""
    from gui.loop import LoopProcess, read_endpoints, set_args
    from rig import config as cfg

    config = None
    try:
        if args.config:
            config = cfg.load(args.config, args.set)
        elif not args.attach and not args.replay:
            config = cfg.load(cfg.builtin("selftest" if args.selftest else "sim"), args.set)
    except cfg.ConfigError as exc:
        raise LaunchError(f"config error: {exc}") from None
    keys = None
    if config is not None and config.bus.curve:
        keys = Keys(str(Path(config.bus.keys_dir).expanduser()), config.bus.client_name)
    if args.attach:
        try:
            return read_endpoints(args.attach), None, keys
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
    if args.replay:
        if not Path(args.replay).exists():
            raise LaunchError(f"--replay {args.replay}: no such session file or folder")
        argv = ["replay", str(args.replay), "--speed", f"{getattr(args, 'speed', 1.0):g}",
                *set_args(args.set)]
        if args.config:
            argv += ["--config", str(args.config)]
        launcher = partial(_replay_loop, argv, Path(args.out or "runs"),
                           Path(args.replay).stem)
        return None, launcher, keys
    out_dir = args.out or config.run.out_dir
    launcher = partial(LoopProcess.for_config, config.source, out_dir, config.run.name,
                       args.set)
    return None, launcher, keys


def attach_secret(text: str) -> bytes | None:
    """The control secret of the loop ``--attach`` names, when it names a run folder (or the
    endpoints.json in one) that holds it; None otherwise (a CURVE bus's keys sign instead,
    or the supervisor refuses the requests and the reply line says so)."""
    from rig.control import SECRET_FILE, read_run_secret

    path = Path(text)
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    if folder is None or not (folder / SECRET_FILE).exists():
        return None
    try:
        return read_run_secret(folder)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def _replay_loop(argv: list[str], out_dir: Path, name: str):
    from datetime import datetime

    from gui.loop import LoopProcess

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return LoopProcess(argv, out_dir / f"replay-{name}-{stamp}")


def run_window(endpoints, launcher, keys, fps: float = 30.0, screenshot: str | None = None,
               after_s: float = 20.0, sizes=((1800, 1050),), replay: str = "",
               secret: bytes | None = None) -> int:
    """Open the dashboard and run Qt's event loop until the window closes; exit code.

    With ``screenshot``, one picture per size in ``sizes`` (the default layout for each),
    then the window closes; without, the dock arrangement is kept in Qt's settings.
    """
    from PyQt6.QtCore import QSettings, QTimer
    from PyQt6.QtWidgets import QApplication

    from gui.app import MainWindow, use_dark_theme

    app = QApplication.instance() or QApplication(["rig gui"])
    use_dark_theme(app)
    settings = None if screenshot else QSettings("rig", "dashboard")
    window = MainWindow(endpoints, launcher, keys, fps, settings=settings, replay=replay,
                        secret=secret)
    if screenshot or window.settings is None or window.settings.value("dashboard/state") is None:
        window.resize(*sizes[0])
        window.default_layout(sizes[0][0])
    window.show()
    result = {"code": 0}
    if screenshot:
        def shoot():
            try:
                for k, (width, height) in enumerate(sizes):
                    path = Path(screenshot)
                    if k:
                        path = path.with_name(f"{path.stem}-{width}x{height}{path.suffix}")
                    window.resize(width, height)
                    window.default_layout(width)
                    app.processEvents()
                    window.save_screenshot(path)
            except OSError as exc:
                log.error("%s", exc)
                result["code"] = 1
            window.close()

        QTimer.singleShot(int(after_s * 1000), shoot)
    # Ctrl-C in the terminal closes the window (and so stops the owned loop) cleanly; the
    # idle timer lets Python run its signal handler while Qt's C++ loop is waiting.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(200)
    app.exec()
    window.shutdown()
    return result["code"]
