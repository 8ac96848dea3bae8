"""Safety limits every stimulation command passes before light reaches the brain.

The gate refuses (never clips) a command that breaks a limit, and refuses everything while
the rig is not armed; arming happens only through the control channel (the SLM node
calls ``arm``/``disarm`` when a signed ARM/DISARM changes its armed state). Each refusal
carries a reason naming the limit.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SafetyLimits:
    """Limits from the ``[stim.safety]`` config table.

    max_targets : most targets in one ensemble.
    max_power_mw_per_target : mW at the sample per target.
    max_total_power_mw : mW at the sample summed over an ensemble.
    min_interval_s : shortest time between two stimulations.
    max_rate_hz_per_neuron : most stimulations per second of any one neuron.
    n_neurons : valid target ids are [0, n_neurons).
    """

    max_targets: int = 50
    max_power_mw_per_target: float = 10.0
    max_total_power_mw: float = 300.0
    min_interval_s: float = 0.5
    max_rate_hz_per_neuron: float = 0.2
    n_neurons: int = 1_000_000

    def __post_init__(self):
        for name in ("max_targets", "max_power_mw_per_target", "max_total_power_mw",
                     "max_rate_hz_per_neuron", "n_neurons"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"stim.safety.{name}={v!r}: must be a finite number > 0")
        if not (isinstance(self.min_interval_s, (int, float)) and self.min_interval_s >= 0):
            raise ValueError(f"stim.safety.min_interval_s={self.min_interval_s!r}: must be >= 0")


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str = ""


class SafetyGate:
    """Checks commands against ``SafetyLimits`` and the armed state; remembers what fired."""

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.armed = False
        self.refused = 0
        self.last_fire_s = -math.inf
        self._neuron_last: dict[int, float] = {}

    def arm(self) -> None:
        self.armed = True
        log.info("stimulation armed")

    def disarm(self) -> None:
        self.armed = False
        log.info("stimulation disarmed")

    def check(self, targets, power_mw, now_s: float) -> Decision:
        """Decide on one command; does not record it (call ``fired`` once it fired).

        Parameters
        ----------
        targets : (K,) int neuron ids; power_mw : (K,) mW per target; now_s : clock, s.
        """
        L = self.limits
        t = np.asarray(targets)
        p = np.asarray(power_mw, dtype=float)
        if not self.armed:
            return self._refuse("not armed: arm stimulation through the control channel")
        if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer):
            return self._refuse(f"targets: need a non-empty 1-D integer array, got {t.dtype} "
                                f"{t.shape}")
        if p.shape != t.shape:
            return self._refuse(f"power_mw: shape {p.shape} differs from targets {t.shape}")
        if t.size > L.max_targets:
            return self._refuse(f"{t.size} targets > max_targets {L.max_targets}")
        if t.min() < 0 or t.max() >= L.n_neurons or np.unique(t).size != t.size:
            return self._refuse(f"targets must be distinct ids in [0, {L.n_neurons})")
        if not np.all(np.isfinite(p)) or p.min() < 0:
            return self._refuse("power_mw must be finite and >= 0")
        if p.max() > L.max_power_mw_per_target:
            return self._refuse(f"{p.max():.2f} mW on one target > max_power_mw_per_target "
                                f"{L.max_power_mw_per_target}")
        if p.sum() > L.max_total_power_mw:
            return self._refuse(f"{p.sum():.2f} mW in total > max_total_power_mw "
                                f"{L.max_total_power_mw}")
        if now_s - self.last_fire_s < L.min_interval_s:
            return self._refuse(f"{now_s - self.last_fire_s:.3f} s since the last stimulation "
                                f"< min_interval_s {L.min_interval_s}")
        gap = 1.0 / L.max_rate_hz_per_neuron
        for i in t.tolist():
            if now_s - self._neuron_last.get(i, -math.inf) < gap:
                return self._refuse(f"neuron {i} stimulated {now_s - self._neuron_last[i]:.3f} s "
                                    f"ago, max_rate_hz_per_neuron {L.max_rate_hz_per_neuron}")
        return Decision(True)

    def fired(self, targets, now_s: float) -> None:
        """Record a stimulation that fired at ``now_s``."""
        self.last_fire_s = now_s
        for i in np.asarray(targets).tolist():
            self._neuron_last[int(i)] = now_s

    def _refuse(self, reason: str) -> Decision:
        self.refused += 1
        log.warning("stimulation refused: %s", reason)
        return Decision(False, reason)
