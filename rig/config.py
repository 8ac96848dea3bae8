"""One TOML file describes a run: ``[run]``, ``[bus]`` and one ``[nodes.NAME]`` table per node.

    [nodes.decoder]
    class = "decoders.node:Decoder"   # the node class, "module:Class"
    machine = "gpu-box"               # which computer starts it (rig run --machine)
    window = 64                       # every other key is the node's own setting

Everything is validated before any process starts; a mistake raises ``ConfigError`` naming
the file, the table, the key and the fix.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from rig.bus import is_loopback
from rig.node import SUPERVISOR, Node, load_class

Seconds = Annotated[float, Meta(gt=0, le=1e6)]
Port = Annotated[int, Meta(ge=0, le=65535)]  # 0: any free port
# A node's name names its log file, its heartbeats and its control: a safe path part.
NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


class ConfigError(ValueError):
    """A config that cannot run; the message names file, table, key and fix."""


class RunConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=NODE_NAME.pattern + "$")] = "run"  # run folder prefix
    out_dir: str = "runs"  # each run writes OUT_DIR/NAME-YYYYmmdd-HHMMSS/
    duration_s: Annotated[float, Meta(ge=0, le=1e7)] = 0.0  # 0: until Ctrl-C or stop
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] = 0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    heartbeat_s: Annotated[float, Meta(gt=0, le=10)] = 0.5  # also the supervisor's ping
    heartbeat_timeout_s: Seconds = 60.0  # a node silent this long (a hung handler) is restarted
    ready_timeout_s: Seconds = 180.0  # loading a pretrained backbone takes a while on CPU
    max_restarts: Annotated[int, Meta(ge=0, le=1000)] = 3  # per node; then the loop stops
    arm_on_start: bool = False  # arm stimulation at start (simulated SLM only)
    # A node that has not heard its supervisor this long disarms (fail to off); a few pings,
    # so a busy node does not trip it.
    deadman_s: Seconds = 3.0


class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    transport: Literal["tcp", "ipc"] = "tcp"
    host: Annotated[str, Meta(min_length=1)] = "127.0.0.1"  # not loopback: curve = true
    pub_port: Port = 0  # 0: any free port (one machine); fix the ports across machines
    sub_port: Port = 0
    control_port: Port = 0
    hwm: Annotated[int, Meta(ge=0, le=10_000_000)] = 1000  # per subscriber before drops
    curve: bool = False
    keys_dir: str = "~/.rig/keys"  # made by `rig keys`
    client_name: str = "rig"  # this machine's key pair in keys_dir
    machine: str = "local"  # the computer that runs the proxy; the others attach to it


@dataclass(frozen=True)
class NodeEntry:
    name: str
    cls: str
    machine: str
    settings: dict


@dataclass(frozen=True)
class Config:
    run: RunConfig
    bus: BusConfig
    nodes: dict[str, NodeEntry]
    source: str = "<memory>"
    raw: dict = field(default_factory=dict)  # as read, recorded with the session

    def nodes_on(self, machine: str) -> list[NodeEntry]:
        return [n for n in self.nodes.values() if n.machine == machine]


def _msgspec_error(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    unknown = re.match(r"Object contains unknown field `([^`]*)`(?: - at `\$\.?(.*)`)?", text)
    if unknown:  # in a nested table (``[nodes.slm.calibrate]``) the key's path says where
        table = f"{unknown.group(2)}." if unknown.group(2) else ""
        return f"{table}{unknown.group(1)}: unknown key"
    match = re.search(r"at `\$\.?(.*)`$", text)
    key = match.group(1) if match else ""
    text = re.sub(r"\s*- at `\$.*`$", "", text)
    return f"{key}: {text}" if key else text


def _convert(data: dict, struct: type, where: str) -> msgspec.Struct:
    try:
        return msgspec.convert(data, struct)
    except msgspec.ValidationError as exc:
        text = _msgspec_error(exc)
        if text.endswith("unknown key") or "Expected `object`" in text:
            fields = ", ".join(f.name for f in msgspec.structs.fields(struct)) or "none"
            text += f" (valid keys: {fields})"
        raise ConfigError(f"{where} {text}") from None


def parse(raw: dict, source: str = "<memory>") -> Config:
    """Validate a config dict (as from TOML)."""
    unknown = set(raw) - {"run", "bus", "nodes"}
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {sorted(unknown)}; "
                          "a config has [run], [bus] and [nodes.NAME] tables")
    run = _convert(raw.get("run", {}), RunConfig, f"{source}: [run]")
    bus = _convert(raw.get("bus", {}), BusConfig, f"{source}: [bus]")
    if run.deadman_s < 2 * run.heartbeat_s:
        raise ConfigError(f"{source}: [run] deadman_s = {run.deadman_s:g}: must be at least "
                          f"2 x heartbeat_s ({2 * run.heartbeat_s:g} s), or armed nodes "
                          "disarm between two pings")
    ports = [(k, getattr(bus, k)) for k in ("pub_port", "sub_port", "control_port")]
    fixed = [(k, port) for k, port in ports if port]
    for i, (key, port) in enumerate(fixed):
        for other, other_port in fixed[i + 1:]:
            if port == other_port:
                raise ConfigError(f"{source}: [bus] {key} and {other} are both {port}: give "
                                  "each its own port (or 0 for any free port)")
    if not is_loopback(bus.host) and not bus.curve:
        raise ConfigError(f"{source}: [bus] host = {bus.host!r} is not loopback: set curve = true "
                          "and make keys with `rig keys` (whoever can publish on the bus can fire "
                          "the stimulation laser)")
    nodes = {}
    tables = raw.get("nodes", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: nodes must be tables [nodes.NAME]")
    for name, table in tables.items():
        where = f"{source}: [nodes.{name}]"
        if not NODE_NAME.fullmatch(name) or name == SUPERVISOR:
            raise ConfigError(f"{where} the name {name!r} cannot name a node: use letters, "
                              "digits, _ and - (at most 64, not 'supervisor'); it names the "
                              "node's log file")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        settings = dict(table)
        cls_path = settings.pop("class", None)
        machine = settings.pop("machine", "local")
        if not settings.pop("enabled", True):
            continue
        if not cls_path:
            raise ConfigError(f"{where} class: missing; name the node class, "
                              "e.g. class = \"sims.node:SimMicroscope\"")
        if not isinstance(cls_path, str):
            raise ConfigError(f"{where} class: must be a string \"package.module:ClassName\"")
        try:
            cls = load_class(cls_path)
        except Exception as exc:  # importing runs the module: any error, said in one line
            raise ConfigError(f"{where} class = {cls_path!r}: cannot load it "
                              f"({type(exc).__name__}: {exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise ConfigError(f"{where} class = {cls_path!r} is not a node: name a subclass "
                              "of rig.node.Node")
        if not isinstance(machine, str):
            raise ConfigError(f"{where} machine: must be a string (a machine name)")
        _convert(settings, cls.Settings, where)
        nodes[name] = NodeEntry(name, cls_path, machine, settings)
    if not nodes:
        raise ConfigError(f"{source}: no [nodes.NAME] table; a run needs at least one node")
    machines = {n.machine for n in nodes.values()}
    if machines - {bus.machine} and 0 in (bus.pub_port, bus.sub_port, bus.control_port):
        raise ConfigError(f"{source}: [bus] nodes run on machines {sorted(machines)}: set "
                          "pub_port, sub_port and control_port so the others can find the bus")
    return Config(run, bus, nodes, source, raw)


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read and validate a TOML config; ``overrides`` are ``table.key=value`` strings."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for item in overrides:
        apply_override(raw, item, str(path))
    return parse(raw, str(path))


def apply_override(raw: dict, item: str, source: str) -> None:
    """``nodes.fish.n_neurons=10000`` -> raw["nodes"]["fish"]["n_neurons"] = 10000."""
    dotted, sep, value = item.partition("=")
    if not sep or not dotted:
        raise ConfigError(f"--set {item!r}: expected TABLE.KEY=VALUE, e.g. run.duration_s=30")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word is a string
    *tables, key = dotted.split(".")
    target = raw
    for table in tables:
        target = target.setdefault(table, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {item!r}: {table} is a value, not a table")
    target[key] = parsed


def builtin(name: str) -> Path:
    """Path of a config shipped with Rig (``sim``, ``selftest``)."""
    path = resources.files("rig") / "configs" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"no built-in config {name!r}")
    return Path(str(path))
