"""The stimulation device: an SLM showing a phase mask and a laser gate that fires it.

``SLMDevice`` is the protocol every SLM follows; the SLM node's ``device`` setting names
one (``SLMS``, or a lab's own ``"package.module:Class"``, built with the config's
``device_settings``; see ``rig.devices``). ``SimulatedSLM`` stands in for the hardware in
simulation and tests. ``SlmsuiteSLM`` drives any SLM slmsuite supports (Meadowlark,
Hamamatsu, Holoeye, Santec, Thorlabs, ...; the ``rig[slm]`` extra), imported inside the
SLM node process only: slmsuite imports OpenCV and matplotlib, whose Qt must never meet
the dashboard's.
"""
from __future__ import annotations

import abc
import logging
import time

import numpy as np

from rig.node import load_class

log = logging.getLogger(__name__)

# built-in devices, by the name the SLM node's ``device`` setting uses
SLMS = {"simulated": "stim.device:SimulatedSLM", "slmsuite": "stim.device:SlmsuiteSLM"}


class SLMDevice(abc.ABC):
    """A phase-only SLM plus the laser gate of the stimulation path."""

    shape: tuple[int, int]

    @abc.abstractmethod
    def display(self, phase: np.ndarray) -> None:
        """Load a (H, W) float32 phase mask in radians [0, 2 pi)."""

    @abc.abstractmethod
    def fire(self, power_mw_total: float) -> int:
        """Open the laser gate for one stimulation at ``power_mw_total``; returns time_ns fired."""

    def close(self) -> None:
        """Release the hardware (laser gate closed first)."""


class SimulatedSLM(SLMDevice):
    """In-memory SLM: keeps the last mask and a log of what fired (time_ns, total mW)."""

    def __init__(self, shape: tuple[int, int] = (256, 256)):
        self.shape = tuple(int(n) for n in shape)
        self.phase = np.zeros(self.shape, dtype=np.float32)
        self.fired: list[tuple[int, float]] = []
        self.closed = False

    def display(self, phase: np.ndarray) -> None:
        phase = np.asarray(phase)
        if phase.shape != self.shape:
            raise ValueError(f"phase: shape {phase.shape}, the SLM is {self.shape}")
        self.phase = phase.astype(np.float32, copy=False)

    def fire(self, power_mw_total: float) -> int:
        if self.closed:
            raise RuntimeError("SimulatedSLM: fire() after close()")
        t = time.time_ns()
        self.fired.append((t, float(power_mw_total)))
        return t

    def close(self) -> None:
        self.closed = True


class SlmsuiteSLM(SLMDevice):
    """Any slmsuite SLM driver, behind Rig's ``SLMDevice``.

    Parameters
    ----------
    driver : ``"package.module:Class"`` of an slmsuite SLM, e.g.
        ``"slmsuite.hardware.slms.meadowlark:Meadowlark"``, or
        ``"slmsuite.hardware.slms.simulated:SimulatedSLM"`` (no hardware).
    **driver_settings : that class's own arguments (``resolution``, ``wav_um``, ...), as the
        slmsuite documentation lists them.

    The laser gate is the rig's own (a Pockels cell, a shutter, the imaging software's
    photostimulation trigger): ``fire`` here only stamps the time and logs once that no
    gate is driven. A lab subclasses this class and overrides ``fire`` (and ``close``, to
    shut the gate first) in one file, then names its class in the config.
    """

    def __init__(self, driver: str, **driver_settings):
        try:
            cls = load_class(driver)
        except ImportError as exc:
            raise ValueError(f"slm device_settings.driver = {driver!r}: cannot import it "
                             f"({exc}); pip install 'rig[slm]' (slmsuite) and the vendor's "
                             "SDK") from None
        if "resolution" in driver_settings:  # TOML gives a list; slmsuite wants (W, H)
            driver_settings["resolution"] = tuple(driver_settings["resolution"])
        self.slm = cls(**driver_settings)
        self.shape = tuple(int(n) for n in self.slm.shape)  # (H, W)
        self._warned = False

    def display(self, phase: np.ndarray) -> None:
        phase = np.asarray(phase)
        if phase.shape != self.shape:
            raise ValueError(f"phase: shape {phase.shape}, the SLM is {self.shape}")
        self.slm.set_phase(phase, settle=True)  # returns once the liquid crystal settled

    def fire(self, power_mw_total: float) -> int:
        if not self._warned:
            self._warned = True
            log.warning("SlmsuiteSLM drives no laser gate: stimulations are only stamped; "
                        "subclass it and override fire() to open your gate")
        return time.time_ns()

    def close(self) -> None:
        self.slm.close()
