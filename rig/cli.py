"""The ``rig`` command: argparse subcommands of a few lines, each calling a library.

Each package adds its own subcommands in ``<package>/commands.py`` (``register(sub)``);
those modules import nothing heavy, so ``rig --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import math
import re
import sys
import time
from pathlib import Path

from rig.argtypes import positive_float

COMMAND_MODULES = ("rig.recording.commands", "rig.camera.commands", "sims.commands",
                   "decoders.commands", "stim.commands", "stim.calibration_commands",
                   "gui.commands")
BENCHMARKS = ("bus", "sim", "planner", "decoder", "camera", "replay", "gui", "loop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rig", description=(
        "Real-time closed-loop controller for whole-brain zebrafish imaging: "
        "run the loop, record, replay, train and evaluate decoders, map connectivity."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_run(sub)
    _register_keys(sub)
    _register_ctl(sub)
    _register_bench(sub)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name.rpartition(".")[0]) and importlib.util.find_spec(name):
            importlib.import_module(name).register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s", datefmt="%H:%M:%S")
    return args.func(args)


# -- rig run -------------------------------------------------------------------------------
def _register_run(sub) -> None:
    p = sub.add_parser("run", help="run the loop from a config (or --sim / --selftest)",
                       description="Start the proxy and the nodes of a config, supervise them, "
                                   "print a summary at the end (also in RUN_DIR/summary.json).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE.toml", help="the run's config")
    src.add_argument("--sim", action="store_true",
                     help="headless closed loop on a simulated fish (built-in config 'sim')")
    src.add_argument("--selftest", action="store_true",
                     help="bus self-test: a paced source and a reader, no science")
    p.add_argument("--duration", type=positive_float, metavar="SECONDS",
                   help="stop after this long (default: the config's run.duration_s)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a config value, e.g. --set nodes.fish.n_neurons=10000 "
                        "(repeatable; VALUE is TOML)")
    p.add_argument("--machine", default="local", metavar="NAME",
                   help="start only the nodes whose `machine` is NAME (default: local)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: run.out_dir/NAME-TIME)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from rig import config as cfg
    from rig.supervisor import Supervisor

    try:
        path = args.config or cfg.builtin("sim" if args.sim else "selftest")
        # --duration is the run's duration for the nodes too (the planner sizes its work by it)
        duration = [f"run.duration_s={args.duration}"] if args.duration else []
        config = cfg.load(path, [*args.set, *duration])
    except cfg.ConfigError as exc:
        print(f"rig run: config error: {exc}", file=sys.stderr)
        return 2
    attach = None
    if args.machine != config.bus.machine:  # the bus runs elsewhere: join it
        from rig.bus import Endpoints

        host = config.bus.host
        attach = Endpoints(*(f"tcp://{host}:{port}" for port in (
            config.bus.pub_port, config.bus.sub_port, config.bus.control_port)))
    return supervise(Supervisor(config, args.machine, args.out, attach), args.duration, "rig run")


def supervise(supervisor, duration_s: float | None, prog: str) -> int:
    """Start, run and stop a loop, print its summary; exit code 1 if it failed."""
    from rig.supervisor import LoopError

    failed = False
    try:
        supervisor.start()
        supervisor.run(duration_s, on_progress=_progress)
    except (LoopError, OSError, TimeoutError, ValueError) as exc:
        failed = True
        supervisor.stop_reason = str(exc)
        print(f"{prog}: {exc}", file=sys.stderr)
    finally:
        supervisor.shutdown()
    if not supervisor.run_dir.exists():  # it could not even start: nothing to report
        return 1
    report = supervisor.report()
    print(format_report(report))
    return 1 if failed or supervisor.node_failed else 0


def _progress(supervisor) -> None:
    parts = []
    for name, state in supervisor.nodes.items():
        stats = state.beat.get("stats") or {}
        shown = [(k, v) for k, v in stats.items() if not isinstance(v, (dict, list))][:4]
        text = " ".join(f"{k}={_fmt(v)}" for k, v in shown)
        parts.append(f"{name}[{state.status}{' ' + text if text else ''}]")
    elapsed = time.monotonic() - supervisor.started_at
    logging.getLogger("rig").info("t=%.0fs  %s", elapsed, "  ".join(parts))


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def format_report(report: dict) -> str:
    """The closing summary a person reads at the end of a run."""
    lines = ["", f"Run summary ({report['run_dir']})",
             f"  stopped: {report['stop_reason'] or 'normally'}; "
             f"ran {report['duration_s']:.1f} s", "",
             f"  {'node':<12}{'status':<9}{'restarts':>9}{'in':>9}{'out':>9}{'drops':>7}"
             f"{'bad msgs':>9}{'errors':>7}{'handler p99 ms':>16}"]
    for name, node in report["nodes"].items():
        counters = node.get("counters") or {}
        drops = sum((node.get("drops") or {}).values())
        lines.append(f"  {name:<12}{node['status']:<9}{node['restarts']:>9}"
                     f"{node.get('msgs_in') or 0:>9}{counters.get('msgs_out', 0):>9}{drops:>7}"
                     f"{node.get('malformed') or 0:>9}{counters.get('errors', 0):>7}"
                     f"{node['handler']['p99_ms']:>16.2f}")
    if report["latency"]:
        lines += ["", f"  {'latency (ms)':<26}{'hop p50':>9}{'p99':>9}{'max':>9}"
                      f"{'since acq p50':>15}{'p99':>9}{'max':>9}"]
        pairs = {}
        for key, stats in report["latency"].items():
            edge, _, kind = key.rpartition(":")
            pairs.setdefault(edge, {})[kind] = stats
        for edge, kinds in sorted(pairs.items()):
            row = f"  {edge:<26}"
            for kind, first in (("hop", 9), ("age", 15)):
                stats = kinds.get(kind)
                row += (f"{stats['p50_ms']:>{first}.2f}{stats['p99_ms']:>9.2f}"
                        f"{stats['max_ms']:>9.1f}" if stats else "")
            lines.append(row)
    lines += _loop_lines(report)
    for name, summary in report["summaries"].items():
        if summary:
            lines += ["", f"  {name}:"]
            lines += [f"    {k}: {_fmt(v)}" for k, v in summary.items()]
    return "\n".join(lines) + "\n"


def _loop_lines(report: dict) -> list[str]:
    """The closed loop's headline: what was mapped, how well, and how fast the gate was."""
    planner = report["summaries"].get("planner") or {}
    if "stims" not in planner:
        return []
    lines = ["", f"  closed loop: gate on the {planner.get('gate', '?')}; "
                 f"{planner['stims']} stimulations ({planner.get('confounded', 0)} confounded)"
                 f", ~{planner.get('stims_to_go', '?')} more before the stopping rule"]
    if "precision" in planner:
        lines.append(f"    mapping vs the simulator's truth: precision {planner['precision']:.2f}"
                     f", recall {planner['recall']:.2f} on the mapped population")
    lines.append(f"    mapped: {planner.get('mapped', '?')}")
    for label, key in (("frame -> gate decision", "planner<-gate.decision:age"),
                       ("frame -> stimulation fired (+1 hop)", "fish<-stim.fired:age")):
        stats = report["latency"].get(key)
        if stats and stats.get("n"):
            lines.append(f"    {label}: p50 {stats['p50_ms']:.1f} ms, p99 "
                         f"{stats['p99_ms']:.1f} ms")
    return lines


# -- rig keys / rig ctl / rig bench --------------------------------------------------------
def _register_keys(sub) -> None:
    p = sub.add_parser("keys", help="make CURVE key pairs for a bus that leaves this machine",
                       description="Create DIR/server.key(_secret) once and a key pair per client "
                                   "name, listed in DIR/authorized/. Copy DIR to each machine.")
    p.add_argument("dir", nargs="?", default="~/.rig/keys")
    p.add_argument("--client", action="append", default=None, metavar="NAME",
                   help="client key pair(s) to make (default: rig)")
    p.set_defaults(func=_keys)


def _keys(args) -> int:
    from rig.bus import make_keys

    try:
        path = make_keys(args.dir, args.client or ["rig"])
    except OSError as exc:
        print(f"rig keys: cannot make keys in {args.dir} ({exc.strerror or exc}): name a folder "
              "you can write, e.g. ~/.rig/keys", file=sys.stderr)
        return 2
    print(f"keys in {path}; authorised clients: "
          f"{sorted(p.stem for p in (path / 'authorized').glob('*.key'))}")
    return 0


def _register_ctl(sub) -> None:
    from rig.messages import Verb

    p = sub.add_parser("ctl", help="send a control command to a running loop",
                       description="Send a control verb to the supervisor of a running loop, "
                                   "signed with the run's secret (RUN_DIR/control.secret, or "
                                   "derived from --keys on a CURVE bus). "
                                   "`rig ctl set KEY=VALUE --target NODE` sets a node's live "
                                   "setting (VALUE is TOML); `rig ctl record on|off`.")
    p.add_argument("verb", choices=[v.value for v in Verb if v is not Verb.PING])
    p.add_argument("value", nargs="?", metavar="KEY=VALUE|on|off",
                   help="set: KEY=VALUE; record: on (default) or off")
    p.add_argument("--run", metavar="RUN_DIR",
                   help="the loop's run folder: its endpoints.json and control.secret")
    p.add_argument("--endpoint", help="the supervisor's control endpoint (default: the run's)")
    p.add_argument("--target", default="*", help="one node's name (default: all)")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys of a bus with curve = true")
    p.add_argument("--client", default="rig", help="this machine's key pair in DIR")
    p.set_defaults(func=_ctl)


def ctl_args(verb: str, value: str | None) -> dict:
    """The args of ``rig ctl VERB VALUE``; ``ValueError`` names the fix."""
    import tomllib

    if verb == "set":
        key, sep, text = (value or "").partition("=")
        if not (sep and key):
            raise ValueError("set needs KEY=VALUE, e.g. rig ctl set protocol=omr --target fish")
        try:
            parsed = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = text  # a bare word is a string
        return {"key": key, "value": parsed}
    if verb == "record":
        if value not in (None, "on", "off"):
            raise ValueError(f"record {value!r}: say on or off")
        return {"on": value != "off"}
    if value is not None:
        raise ValueError(f"{verb} takes no value (got {value!r})")
    return {}


def _ctl(args) -> int:
    import json

    from rig.bus import Keys
    from rig.control import read_run_secret, send_control

    try:
        request_args = ctl_args(args.verb, args.value)
        endpoint, secret = args.endpoint, None
        if args.run:
            secret = read_run_secret(args.run)
            if endpoint is None:
                endpoint = _run_endpoints(args.run)["control"]
        if endpoint is None:
            raise ValueError("say which loop: --run RUN_DIR (or --endpoint E with --keys DIR)")
        if not re.fullmatch(r"(tcp|ipc)://\S+", endpoint):
            raise ValueError(f"--endpoint {endpoint!r} is not a ZeroMQ endpoint: e.g. "
                             "tcp://127.0.0.1:5557 (the \"control\" of RUN_DIR/endpoints.json)")
        keys = Keys(str(Path(args.keys).expanduser()), args.client) if args.keys else None
        if secret is None and keys is None:
            raise ValueError("the run's secret is needed to command it: pass --run RUN_DIR "
                             "(it holds control.secret), or --keys DIR on a CURVE bus")
        reply = send_control(endpoint, args.verb, args.target, request_args, keys=keys,
                             secret=secret)
    except (ValueError, OSError, TimeoutError) as exc:
        print(f"rig ctl: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    if not reply.get("ok"):
        print(f"rig ctl: refused: {reply.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0


def _run_endpoints(run_dir: str) -> dict:
    import json

    path = Path(run_dir) / "endpoints.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{path}: missing or unreadable; is {run_dir} a running loop's "
                         "run folder?") from None


def _register_bench(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark (prints a table, writes JSON)",
                       description="Run benchmarks/NAME.py; extra arguments go to it "
                                   "(e.g. rig bench bus --quick).")
    p.add_argument("name", choices=BENCHMARKS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    module = importlib.import_module(f"benchmarks.{args.name}")
    return module.main(args.rest) or 0


if __name__ == "__main__":
    sys.exit(main())
