"""The one seam for devices: a reader, camera or SLM is named ``"package.module:Class"``.

A lab adds its device by writing one class, in any importable module, that has the methods
of its kind's protocol, and by naming it in the config; nothing in Rig changes:

==========  ================================  ==============================================
kind        protocol                          built-in names
==========  ================================  ==============================================
reader      ``rig.readers.Reader``            ``"tiff"``, ``"zmq"``
SLM         ``stim.device.SLMDevice``         ``"simulated"``, ``"slmsuite"``
==========  ================================  ==============================================

Cameras are named the same way (``"stack"``, ``"video"``, ``"basler"``, ``"genicam"`` or
``"package.module:Class"``) but loaded by ``rig.camera.sources.open_source``, which keeps
the camera's flat settings and requires a ``FrameSource`` subclass.

The class is built with the node's fixed arguments (a reader gets ``shape`` and
``timeout_s``) plus the device's own settings table from the config, checked against its
``__init__`` before anything opens. Device classes import their vendor library inside
methods, never at module import, so that naming one costs nothing until it opens (and
OpenCV, which slmsuite imports, never reaches the dashboard process).
"""
from __future__ import annotations

import inspect

from rig.node import load_class


class DeviceError(ValueError):
    """A device that cannot be loaded or built; the message names the setting and the fix."""


def protocol_methods(protocol: type) -> list[str]:
    """The public methods a class must have to stand for ``protocol``."""
    return sorted(name for name, value in vars(protocol).items()
                  if callable(value) and not name.startswith("_"))


def protocol_attributes(protocol: type) -> list[str]:
    """The public attributes (annotated in the protocol) a built device must have."""
    return sorted(n for n in vars(protocol).get("__annotations__", {}) if not n.startswith("_"))


def device_class(spec: str, protocol: type, builtins: dict[str, str], what: str) -> type:
    """The class named by ``spec``: a built-in name or ``"package.module:Class"``.

    Parameters
    ----------
    spec : the config's value; protocol : the class whose public methods it must have.
    builtins : short names -> ``"package.module:Class"``; what : the setting, for errors.
    """
    path = builtins.get(spec, spec)
    if ":" not in path:
        raise DeviceError(f"{what} = {spec!r}: use one of {sorted(builtins)} or "
                          "'package.module:Class' for your own")
    try:
        cls = load_class(path)
    except ImportError as exc:
        raise DeviceError(f"{what} = {spec!r}: cannot import it ({type(exc).__name__}: {exc}); "
                          "install its package or fix the module name") from None
    except ValueError as exc:
        raise DeviceError(f"{what} = {spec!r}: {exc}") from None
    if not isinstance(cls, type):
        raise DeviceError(f"{what} = {spec!r} is not a class")
    missing = [m for m in protocol_methods(protocol) if not callable(getattr(cls, m, None))]
    if missing:
        raise DeviceError(f"{what} = {spec!r} lacks {', '.join(m + '()' for m in missing)}: "
                          "it must follow "
                          f"{protocol.__module__}.{protocol.__qualname__}")
    return cls


def open_device(spec: str, protocol: type, builtins: dict[str, str], what: str,
                settings: dict | None = None, **given):
    """Build the device ``spec`` names with ``given`` (fixed by the node) and ``settings``
    (the config's ``{what}_settings`` table), checked against its ``__init__`` first."""
    cls = device_class(spec, protocol, builtins, what)
    settings = dict(settings or {})
    try:
        params = inspect.signature(cls).parameters
    except ValueError:  # no inspectable signature (a C extension): let it say
        return _checked(cls(**given, **settings), protocol, spec, what)
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    valid = [n for n in named if n not in given]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in settings if k not in valid and not takes_any]
    missing = [n for n in valid if n not in settings
               and params[n].default is inspect.Parameter.empty]
    if unknown or missing:
        problem = (f"unknown key(s) {', '.join(unknown)}" if unknown
                   else f"missing key(s) {', '.join(missing)}")
        raise DeviceError(f"{what}_settings for {spec!r}: {problem} (valid keys: "
                          f"{', '.join(valid) or 'none'})")
    return _checked(cls(**given, **settings), protocol, spec, what)


def _checked(device, protocol: type, spec: str, what: str):
    """``device`` if it has the protocol's attributes (set in ``__init__``), else closed and
    refused."""
    absent = [a for a in protocol_attributes(protocol) if not hasattr(device, a)]
    if absent:
        device.close()
        raise DeviceError(f"{what} = {spec!r} has no attribute {', '.join(absent)}: it must "
                          f"follow {protocol.__module__}.{protocol.__qualname__}")
    return device
