"""The control channel's client side and the run's control secret.

A supervisor answers control requests on a ROUTER socket (``rig.supervisor``); a request is
JSON (``rig.messages.ControlRequest``) signed with the run's secret (``sign_control``). The
secret is written to ``RUN_DIR/control.secret`` (mode 0600) at start; ``rig ctl --run`` and
the dashboard read it with ``read_run_secret``. On a CURVE bus every machine derives it from
the server key (``derived_secret``), so ``rig ctl --keys DIR`` can sign too.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import msgspec
import zmq

from rig.bus import Keys, secure_client
from rig.messages import Verb
from rig.node import sign_control

SECRET_FILE = "control.secret"


def write_run_secret(run_dir: Path, key: bytes) -> Path:
    """Write the run's control secret to ``run_dir/control.secret``, readable by its owner
    only (mode 0600 from the first byte)."""
    path = Path(run_dir) / SECRET_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key.hex())
    return path


def read_run_secret(run_dir: str | Path) -> bytes:
    """The control secret of the run in ``run_dir`` (for ``send_control``); ``ValueError``
    says what is missing."""
    path = Path(run_dir)
    path = path / SECRET_FILE if path.is_dir() or not path.name.endswith(".secret") else path
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; give the run folder of a running loop "
                         "(it holds control.secret)") from None
    except PermissionError:
        raise ValueError(f"{path}: not readable; run this as the user who started the loop"
                         ) from None
    except ValueError:
        raise ValueError(f"{path}: not a Rig control secret (hex)") from None


def derived_secret(keys: Keys) -> bytes:
    """The control key of a CURVE bus: derived from the server key every machine holds, so
    every supervisor of the run (and ``rig ctl --keys``) can sign."""
    return hashlib.sha256(b"rig-control" + keys.server_pair()[1]).digest()


def send_control(endpoint: str, verb: Verb | str, target: str = "*", args: dict | None = None,
                 timeout_ms: int = 3000, keys: Keys | None = None,
                 secret: bytes | None = None) -> dict:
    """Send one control request to a running supervisor and return its reply.

    ``secret`` signs the request (``read_run_secret(RUN_DIR)``, or ``derived_secret(keys)``
    on a CURVE bus); the supervisor refuses unsigned requests.
    """
    request = {"sender": "ctl", "verb": Verb(verb).value, "target": target,
               "args": args or {}, "t_ns": time.time_ns()}
    if secret is None and keys is not None:
        secret = derived_secret(keys)
    if secret is not None:
        request["mac"] = sign_control(secret, request)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        secure_client(sock, keys)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ValueError(f"endpoint {endpoint!r} ({exc}): expected e.g. tcp://127.0.0.1:5557"
                             " (the \"control\" of RUN_DIR/endpoints.json)") from None
        sock.send_multipart([b"", msgspec.json.encode(request)])
        if not sock.poll(timeout_ms):
            raise TimeoutError(f"no reply from the supervisor at {endpoint} in {timeout_ms} ms: "
                               "is the loop running (see endpoints.json in its run folder)?")
        return msgspec.json.decode(sock.recv_multipart()[-1])
    finally:
        sock.close(0)
