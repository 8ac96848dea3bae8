"""The bus: one XSUB/XPUB proxy that every node publishes into and subscribes from.

Publishers set a send high-water mark before connecting, so a slow subscriber is dropped
for and never blocks acquisition (pyzmq#148, imagezmq#27: HWM set after connect does not
apply). Each (source, topic) stream carries a sequence number; subscribers count gaps as
drops. Off loopback every socket uses CURVE, because whoever can publish can fire the laser.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from rig.messages import Message, MessageError, decode, encode

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Keys:
    """CURVE key files. ``server_secret`` on the proxy side, ``client_secret`` on a node."""

    keys_dir: str
    client_name: str = "rig"

    def server_public(self) -> bytes:
        return self._load("server.key")[0]

    def server_pair(self) -> tuple[bytes, bytes]:
        return self._load("server.key_secret")

    def client_pair(self) -> tuple[bytes, bytes]:
        return self._load(f"{self.client_name}.key_secret")

    def _load(self, name: str) -> tuple[bytes, bytes]:
        path = Path(self.keys_dir) / name
        try:
            return zmq.auth.load_certificate(path)
        except (OSError, ValueError):
            raise OSError(f"{path}: missing or not a key file; make the keys with "
                          f"`rig keys {self.keys_dir}` and copy that folder to each machine"
                          ) from None

    @property
    def authorized_dir(self) -> Path:
        return Path(self.keys_dir) / "authorized"


def make_keys(keys_dir: str | Path, client_names=("rig",)) -> Path:
    """Create the server key pair (once) and one pair per client, authorising each client.

    Copy ``DIR`` to every machine of the rig; remove a file from ``DIR/authorized`` to
    revoke that client. Secret key files are readable by their owner only (0600), in a
    folder only its owner can enter (0700). Raises ``OSError`` if ``DIR`` cannot be made.
    """
    keys_dir = Path(keys_dir).expanduser()
    (keys_dir / "authorized").mkdir(parents=True, exist_ok=True)
    keys_dir.chmod(0o700)
    previous = os.umask(0o077)  # the secret files are private from their first byte
    try:
        if not (keys_dir / "server.key_secret").exists():
            zmq.auth.create_certificates(keys_dir, "server")
        for name in client_names:
            if not (keys_dir / f"{name}.key_secret").exists():
                public, _ = zmq.auth.create_certificates(keys_dir, name)
                (keys_dir / "authorized" / f"{name}.key").write_bytes(Path(public).read_bytes())
    finally:
        os.umask(previous)
    for secret in keys_dir.glob("*.key_secret"):
        secret.chmod(0o600)  # also those an older Rig made world-readable
    return keys_dir


class _AuthorizedKeys:
    """CURVE credentials: the public keys in ``DIR/authorized``; a refused handshake is
    logged as a warning (libzmq only drops the peer, silently: pyzmq#1706)."""

    def __init__(self, authorized_dir: Path):
        self.allowed = set(zmq.auth.load_certificates(str(authorized_dir)))

    def callback(self, domain: str, client_key: bytes) -> bool:
        if client_key in self.allowed:
            return True
        log.warning("refused a CURVE handshake from an unknown key %s: add its .key file to "
                    "the keys folder's authorized/ to let it in", client_key.decode())
        return False


def secure_client(sock: zmq.Socket, keys: Keys | None) -> None:
    """Make ``sock`` a CURVE client of the proxy (call before connect)."""
    if keys is None:
        return
    public, secret = keys.client_pair()
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_serverkey = keys.server_public()


def secure_server(sock: zmq.Socket, keys: Keys | None) -> None:
    if keys is None:
        return
    sock.curve_publickey, sock.curve_secretkey = keys.server_pair()
    sock.curve_server = True


@dataclass(frozen=True)
class Endpoints:
    """Where nodes publish into (``pub``), subscribe from (``sub``) and send control to."""

    pub: str
    sub: str
    control: str


class Proxy:
    """XSUB/XPUB forwarder in a background thread (zmq.proxy runs in C, without the GIL).

    Binds to port 0 unless ports are given and reads the endpoints back. With ``keys``
    every connection must pass CURVE with a key listed in ``keys.authorized_dir``; a
    refused handshake is logged by the authenticator, never silently ignored.
    """

    def __init__(self, host: str = "127.0.0.1", pub_port: int = 0, sub_port: int = 0,
                 hwm: int = 1000, keys: Keys | None = None, transport: str = "tcp",
                 ipc_dir: str | None = None):
        self.ctx = zmq.Context.instance()
        self._auth = None
        if keys is not None:
            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("rig.auth"))
            self._auth.start()
            self._auth.configure_curve_callback(
                domain="*", credentials_provider=_AuthorizedKeys(keys.authorized_dir))
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            sock.linger = 0
            secure_server(sock, keys)
        self.xsub.rcvhwm = hwm
        self.xpub.sndhwm = hwm
        self.pub = _bind(self.xsub, transport, host, pub_port, ipc_dir, "pub")
        self.sub = _bind(self.xpub, transport, host, sub_port, ipc_dir, "sub")
        # A steerable proxy stops on "TERMINATE" from its control socket, so its sockets
        # are closed by the thread that uses them (closing them from here is unsafe).
        control_address = f"inproc://rig-proxy-control-{id(self)}"
        control_end = self.ctx.socket(zmq.PAIR)
        control_end.bind(control_address)
        self._control = self.ctx.socket(zmq.PAIR)
        self._control.linger = 0
        self._control.connect(control_address)
        self._thread = threading.Thread(target=self._run, args=(control_end,),
                                        name="rig-proxy", daemon=True)
        self._thread.start()

    def _run(self, control_end: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(self.xsub, self.xpub, None, control_end)
        except zmq.ZMQError as exc:
            log.debug("proxy ended: %s", exc)
        finally:
            for sock in (self.xsub, self.xpub, control_end):
                sock.close(0)

    def close(self) -> None:
        if self._thread.is_alive():
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=2)
        self._control.close(0)
        if self._auth is not None:
            self._auth.stop()


def _bind(sock: zmq.Socket, transport: str, host: str, port: int, ipc_dir, name) -> str:
    if transport == "ipc":
        Path(ipc_dir).mkdir(parents=True, exist_ok=True)
        sock.bind(f"ipc://{ipc_dir}/{name}")
    else:
        address = f"[{host}]" if ":" in host else host
        try:
            sock.bind(f"tcp://{address}:{port or '*'}")
        except zmq.ZMQError as exc:
            raise OSError(f"cannot bind the bus {name} socket to {host}:{port} ({exc}); "
                          "another Rig may be running, or set the port to 0") from None
    return sock.last_endpoint.decode()


class Publisher:
    """Publishes messages into the proxy; never blocks (drops at the high-water mark)."""

    def __init__(self, endpoint: str, source: str, hwm: int = 1000, keys: Keys | None = None,
                 ctx: zmq.Context | None = None):
        self.source = source
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.PUB)
        self.sock.linger = 0
        self.sock.sndhwm = hwm  # before connect, or it does not apply
        secure_client(self.sock, keys)
        self.sock.connect(endpoint)
        self._seq: dict[str, int] = defaultdict(int)
        self.sent = 0

    def publish(self, topic: str, arrays=None, meta=None, frame: int = -1,
                t_acq_ns: int = 0) -> Message:
        msg = Message(topic, dict(arrays or {}), dict(meta or {}), frame, t_acq_ns,
                      self.source, self._seq[topic])
        self.send(msg)
        return msg

    def send(self, msg: Message) -> None:
        """Send a ready message; its ``source`` and ``seq`` are set here."""
        msg.source = self.source
        msg.seq = self._seq[msg.topic]
        self._seq[msg.topic] += 1
        # NOBLOCK: a PUB never blocks anyway, but be explicit that acquisition must not wait.
        self.sock.send_multipart(encode(msg), copy=False, flags=zmq.NOBLOCK)
        self.sent += 1

    def close(self) -> None:
        self.sock.close(0)


class Subscriber:
    """Subscribes to topic prefixes; decodes, counts drops (sequence gaps) and malformed input."""

    def __init__(self, endpoint: str, topics=("",), hwm: int = 1000, keys: Keys | None = None,
                 ctx: zmq.Context | None = None):
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = hwm  # 0 = unbounded: the recorder, which must lose nothing
        secure_client(self.sock, keys)
        self.sock.connect(endpoint)
        for topic in topics:
            self.sock.subscribe(topic)
        self._next_seq: dict[tuple[str, str], int] = {}
        self.drops: dict[str, int] = defaultdict(int)  # topic -> messages lost
        self.received = 0
        self.malformed = 0
        self.last_error = ""

    def subscribe(self, topic: str) -> None:
        self.sock.subscribe(topic)

    def recv(self, timeout_ms: int | None = None) -> Message | None:
        """The next valid message, or None on timeout or if what arrived was malformed."""
        if timeout_ms is not None and not self.sock.poll(timeout_ms):
            return None
        frames = self.sock.recv_multipart(copy=False)
        return self.accept(frames)

    def accept(self, frames) -> Message | None:
        """Decode frames already received on ``sock`` (for callers that poll themselves)."""
        try:
            msg = decode(frames)
        except MessageError as exc:
            self.malformed += 1
            self.last_error = str(exc)
            log.warning("dropped malformed message: %s", exc)
            return None
        key = (msg.source, msg.topic)
        expected = self._next_seq.get(key)
        if expected is not None and msg.seq > expected:
            self.drops[msg.topic] += msg.seq - expected
        self._next_seq[key] = msg.seq + 1
        self.received += 1
        return msg

    def close(self) -> None:
        self.sock.close(0)


def wait_connected(pub: Publisher, sub: Subscriber, topic: str, timeout_s: float = 10.0) -> None:
    """Publish probes on ``topic`` until ``sub`` receives one (the slow-joiner handshake)."""
    sub.subscribe(topic)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.publish(topic)
        # Other traffic may already flow: read for a while, then probe again.
        retry_at = time.monotonic() + 0.02
        while (left := retry_at - time.monotonic()) > 0:
            msg = sub.recv(timeout_ms=max(1, int(left * 1000)))
            if msg is not None and msg.topic == topic:
                sub.sock.unsubscribe(topic)
                return
    raise TimeoutError(f"no message came back through the bus on {topic!r} within "
                       f"{timeout_s:.0f} s: is the proxy running and are the keys right?")
