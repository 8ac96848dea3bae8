"""The stimulation device: an SLM showing a phase mask and a laser gate that fires it.

``SLMDevice`` is the interface a hardware driver implements (a real one would wrap
slmsuite's Meadowlark/Holoeye/... classes, installed as the ``rig[slm]`` extra, inside the
SLM node process only). ``SimulatedSLM`` stands in for the hardware in simulation and tests.
"""
from __future__ import annotations

import abc
import time

import numpy as np


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
        self.shape = tuple(shape)
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
