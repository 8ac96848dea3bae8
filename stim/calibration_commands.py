"""``rig calibrate slm``: measure imaging ↔ SLM coordinates and write the calibration file.

Kept light: heavy imports (slmsuite, OpenCV) happen inside the command, so ``rig --help``
stays fast.
"""
from __future__ import annotations

import sys

from rig.argtypes import positive_float


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="calibrate a device (slm: imaging <-> SLM coordinates)",
                       description="Show a grid of spots on the SLM one at a time, find each in "
                                   "the calibration camera's image, fit imaging -> SLM "
                                   "coordinates and write the file the SLM node loads "
                                   "(its calibration_file).")
    p.add_argument("device", choices=["slm"])
    p.add_argument("--config", required=True, metavar="FILE.toml",
                   help="the rig's config: its SLM node's device, [calibrate] table and "
                        "calibration_file, its microscope node's um_per_px")
    p.add_argument("--node", metavar="NAME", help="the SLM node's name (default: the only one)")
    p.add_argument("--out", metavar="PATH.json", help="where to write (default: the SLM "
                                                      "node's calibration_file)")
    p.add_argument("--um-per-px", type=positive_float, metavar="UM",
                   help="imaging pixel size (default: the microscope node's um_per_px)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a config value (repeatable; VALUE is TOML)")
    p.set_defaults(func=_calibrate_slm)


def _calibrate_slm(args) -> int:
    try:
        return _run(args)
    except ValueError as exc:  # ConfigError, DeviceError, CalibrationError: one clear line
        print(f"rig calibrate slm: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from pathlib import Path

    import msgspec

    from rig import config as cfg
    from rig.devices import open_device
    from rig.node import load_class
    from rig.readers.node import Microscope
    from stim.calibration import IMAGERS, Imager, measure, save
    from stim.slm_node import SLM, open_slm

    config = cfg.load(args.config, args.set)
    kinds = {name: load_class(n.cls) for name, n in config.nodes.items()}
    slms = [name for name, cls in kinds.items() if issubclass(cls, SLM)]
    name = args.node or (slms[0] if len(slms) == 1 else None)
    if name not in slms:
        raise ValueError(f"{config.source}: --node {args.node or '?'}: name one of the SLM "
                         f"nodes {slms}" if slms else f"{config.source}: no SLM node "
                         "(class = \"stim.slm_node:SLM\")")
    s = msgspec.convert(config.nodes[name].settings, SLM.Settings)
    c = s.calibrate
    scopes = [msgspec.convert(config.nodes[n].settings, Microscope.Settings).um_per_px
              for n, cls in kinds.items() if issubclass(cls, Microscope)]
    um_per_px = args.um_per_px or (scopes[0] if len(scopes) == 1 else None)
    if um_per_px is None:
        raise ValueError("--um-per-px: give the imaging pixel size (no single microscope "
                         "node in the config to take it from)")
    out = args.out or s.calibration_file
    if not out:
        raise ValueError(f"[nodes.{name}] calibration_file: not set; set it (the node loads "
                         "it) or give --out")
    if c.power_mw > s.max_power_mw_per_target:
        raise ValueError(f"[nodes.{name}.calibrate] power_mw = {c.power_mw}: above the node's "
                         f"max_power_mw_per_target ({s.max_power_mw_per_target})")
    device = open_slm(s)
    try:
        imager = open_device(c.camera, Imager, IMAGERS, f"[nodes.{name}.calibrate] camera",
                             c.camera_settings, device=device)
        try:
            m = measure(device, imager, um_per_px, c.grid, c.extent, c.power_mw,
                        method=c.method, max_residual_px=c.max_residual_px)
        finally:
            imager.close()
    finally:
        device.close()
    path = save(out, m)
    rms = float((m.residual_px ** 2).mean() ** 0.5)
    print(f"{len(m.slm_px)} spots measured; {m.method} fit, residual rms {rms:.3f}, max "
          f"{m.residual_px.max():.3f} SLM far-field px")
    print(f"wrote {path}")
    if not s.calibration_file or path.resolve() != Path(s.calibration_file).expanduser(
    ).resolve():
        print(f"set calibration_file = \"{path}\" in [nodes.{name}] to use it")
    return 0
