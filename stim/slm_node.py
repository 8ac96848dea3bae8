"""The stimulation device node ``SLM``: fires what the planner asks, behind the safety gate.

``SLM`` subscribes to ``stim.plan`` (and ``anatomy`` for target positions, imaging µm).
Each command passes ``stim.safety`` (limits from its settings; the gate is armed and
disarmed, through ``arm``/``disarm``, only by the control channel's signed ARM/DISARM);
accepted ones get a (cached) hologram that puts a spot on each target's imaging position
through the calibration (``calibration_file``, from ``rig calibrate slm``), are shown and
fired on the device and published on ``stim.fired`` with the plan's frame and t_acq_ns and
``spots_um`` (K, 2) float32, where the spots land in imaging µm (x, y); refused ones are
logged, counted and published on ``log``.

The device is ``device``: ``"simulated"``, ``"slmsuite"`` (any SLM slmsuite drives; the
``rig[slm]`` extra, imported only in this process) or a lab's ``"package.module:Class"``
(``stim.device.SLMDevice``), built with ``device_settings``::

    [nodes.slm]
    class = "stim.slm_node:SLM"
    device = "slmsuite"
    device_settings = {driver = "slmsuite.hardware.slms.meadowlark:Meadowlark"}
    calibration_file = "~/.rig/slm-calibration.json"

Fail to off: the runtime disarms it when its supervisor falls silent (``run.deadman_s``)
and it obeys only its own run's signed control (``rig.node``). The anatomy (target ids and
positions) is fixed for a run: the first ``anatomy`` is kept, a different one is refused
and counted, until the signed control verb ``set anatomy=reset`` lets the next one in.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgspec
import numpy as np

from rig.messages import ANATOMY, LOG, STIM_FIRED, STIM_PLAN
from rig.node import Node, Verb


class CalibrateSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[nodes.slm.calibrate]``: what ``rig calibrate slm`` uses (not the running node)."""

    camera: str = "slmsuite"  # an imager: "slmsuite" or "package.module:Class"
    camera_settings: dict[str, Any] = {}  # slmsuite: {driver = "...:ThorCam", ...}
    grid: int = 4  # spots per side of the calibration pattern
    extent: float = 0.5  # fraction of the SLM's field the pattern spans
    power_mw: float = 1.0  # laser power per calibration spot
    method: str = "affine"  # or "slmsuite": its Fourier calibration (needs slmsuite devices)
    max_residual_px: float = 1.0  # SLM far-field px; a spot further from the fit fails it


class SLM(Node):
    """Holographic stimulation device behind the safety gate."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        max_targets: int = 50
        max_power_mw_per_target: float = 10.0
        max_total_power_mw: float = 300.0
        min_interval_s: float = 1.0
        max_rate_hz_per_neuron: float = 0.2
        # "simulated", "slmsuite" or "package.module:Class" (a stim.device.SLMDevice)
        device: str = "simulated"
        # the device's own keys: simulated {shape}; slmsuite {driver, and the driver's own}
        device_settings: dict[str, Any] = {}
        # from `rig calibrate slm`; "": map the anatomy's extent (the simulated SLM only)
        calibration_file: str = ""
        hologram: str = "rig"  # Rig's own WGS, or a slmsuite algorithm ("WGS-Kim", ...)
        hologram_pad: int = 1  # far-field oversampling: spots within 1/(2 pad) SLM px
        wgs_iterations: int = 20
        calibrate: CalibrateSettings = CalibrateSettings()

    subscribe = (STIM_PLAN, ANATOMY)

    def setup(self) -> None:
        from stim.safety import SafetyGate, SafetyLimits

        s = self.settings
        if s.hologram_pad < 1:
            raise ValueError(f"slm hologram_pad = {s.hologram_pad}: give 1 (none) or more")
        self.gate = SafetyGate(SafetyLimits(s.max_targets, s.max_power_mw_per_target,
                                            s.max_total_power_mw, s.min_interval_s,
                                            s.max_rate_hz_per_neuron))
        self.device = open_slm(s)
        self.calibration = self._load_calibration()
        self.holograms = None
        self.n_fired = 0
        import torch

        from stim.hologram import wgs

        # one thread: on a shared CPU torch's pool spins against the other nodes (7x slower
        # here); a GPU rig runs WGS on the GPU anyway
        torch.set_num_threads(1)
        wgs(np.array([[3, 4], [5, -6], [-7, 2]]), (32, 32), iterations=2)  # import torch now

    def _load_calibration(self):
        """The measured calibration, or None where the simulated SLM may do without."""
        from stim import calibration

        s = self.settings
        if s.calibration_file:
            return calibration.load(s.calibration_file, self.device.shape)
        if s.device != "simulated":
            raise calibration.CalibrationError(
                f"slm calibration_file: missing for device {s.device!r}; measure one with "
                "`rig calibrate slm --config YOUR.toml` and name it here")
        return None

    def _calibration(self, positions: np.ndarray):
        from stim.hologram import Calibration

        if self.calibration is not None:
            return self.calibration
        # simulated SLM without a calibration: map the anatomy into one half of the field,
        # clear of the zero order (a stand-in for a measured calibration)
        H, W = self.device.shape
        lo, hi = positions[:, :2].min(axis=0), positions[:, :2].max(axis=0)
        scale = min((W // 2 - 12) / max(hi[0] - lo[0], 1e-6), (H - 16) / max(hi[1] - lo[1], 1e-6))
        m = np.array([[scale, 0, 0, 8 - scale * lo[0]],
                      [0, scale, 0, -scale * (lo[1] + hi[1]) / 2]])
        return Calibration(m, self.device.shape)

    def on_message(self, msg) -> None:
        if msg.topic == ANATOMY and "positions" in msg.arrays:
            from stim.hologram import HologramCache

            pos = np.array(msg["positions"], dtype=float)
            if self.holograms is not None:
                if not np.array_equal(pos, self.holograms.positions):
                    self.counters["anatomy_refused"] += 1
                    self.log.warning("a different anatomy from %r refused: the anatomy is "
                                     "fixed for a run (set anatomy=reset to change it)",
                                     msg.source)
                return  # the simulator repeats anatomy for late joiners: keep the cache
            self.gate.limits = dataclasses.replace(self.gate.limits, n_neurons=len(pos))
            s = self.settings
            self.holograms = HologramCache(pos, self._calibration(pos),
                                           iterations=s.wgs_iterations, pad=s.hologram_pad,
                                           method=s.hologram)
            self.log.info("anatomy: %d target positions, holograms from now on", len(pos))
            return
        if msg.topic != STIM_PLAN:
            return
        targets = np.array(msg["targets"])
        power = np.array(msg["power_mw"], dtype=float)
        now = time.monotonic()
        self._follow_armed()
        decision = self.gate.check(targets, power, now)  # counts its refusals (gate.refused)
        if not decision.ok:
            self.publish(LOG, None, {"level": "WARNING", "text": f"stimulation refused: "
                                       f"{decision.reason}", "targets": targets.tolist()})
            return
        spots = np.full((len(targets), 2), np.nan, np.float32)  # not aimed: no anatomy yet
        if self.holograms is None:
            self.counters["fired_without_hologram"] += 1  # no anatomy yet: nothing to aim at
        else:
            try:
                self.device.display(self.holograms.get(targets, power))
                spots = self.holograms.aimed_um(targets)
            except ValueError as exc:  # off the SLM field / on the zero order
                self.counters["refused_hologram"] += 1
                self.publish(LOG, None, {"level": "WARNING",
                                           "text": f"stimulation refused: {exc}"})
                return
        total = float(power.sum())
        t_fired = self.device.fire(total)
        self.gate.fired(targets, now)
        self.n_fired += 1
        self.publish(STIM_FIRED, {"targets": targets.astype(np.int32), "spots_um": spots},
                     {"t_fired_ns": int(t_fired), "power_mw_total": total},
                     frame=msg.frame, t_acq_ns=msg.t_acq_ns)

    def _follow_armed(self) -> None:
        """The gate follows ``self.armed``, which only the control channel's signed ARM and
        DISARM change (``rig.node``)."""
        if self.armed and not self.gate.armed:
            self.gate.arm()
        elif not self.armed and self.gate.armed:
            self.gate.disarm()

    def on_control(self, verb, args) -> None:
        if verb in (Verb.ARM, Verb.DISARM):
            self._follow_armed()
        elif verb is Verb.SET and args.get("key") == "anatomy" and args.get("value") == "reset":
            self.holograms = None
            self.log.info("anatomy reset: the next anatomy message is taken")

    def teardown(self) -> None:
        if getattr(self, "device", None) is not None:  # setup may have failed before it
            self.device.close()

    def stats(self) -> dict:
        """``refused``: all refused commands, by the safety gate or for want of a hologram
        (``refused_hologram`` of them)."""
        aimless = int(self.counters["refused_hologram"])
        return {"fired": self.n_fired, "refused": int(self.gate.refused) + aimless,
                "refused_hologram": aimless, "armed": bool(self.armed)}

    def summary(self) -> dict:
        cache = {} if self.holograms is None else {"hologram_hits": self.holograms.hits,
                                                   "hologram_misses": self.holograms.misses}
        return {**self.stats(), **cache}


def open_slm(settings: SLM.Settings):
    """The SLM device the node's settings name (``rig calibrate slm`` opens it the same way)."""
    from rig.devices import open_device
    from stim.device import SLMS, SLMDevice

    return open_device(settings.device, SLMDevice, SLMS, "slm device", settings.device_settings)
