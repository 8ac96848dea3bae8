"""A session in memory: what one imaging run holds, as arrays.

This is the form every offline tool shares: ``rig simulate`` makes one, the recorder's
files and imported suite2p/NWB data become one, ``rig train``/``rig eval`` read one.
On disk a session is the recorder's MCAP file (see ``rig.recording``); ``read`` and
``write`` here are the only entry points the rest of Rig uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Session:
    """One imaging run.

    Shapes: T imaging frames, N neurons, S tail segments, M stimulations, K max targets.
    """

    traces: np.ndarray  # (T, N) float32 dF/F per imaging frame
    t_ns: np.ndarray  # (T,) int64 acquisition time of each imaging frame, ns
    frame_rate_hz: float  # imaging volume rate
    tail: np.ndarray  # (T, S) float32 mean tail segment angles (rad) over each frame's exposure
    stimulus: np.ndarray | None = None  # (T,) int8 visual stimulus code per frame
    stimulus_names: list[str] = field(default_factory=list)  # code -> name
    positions: np.ndarray | None = None  # (N, 3) float32 neuron centroids, um (x, y, z)
    regions: np.ndarray | None = None  # (N,) int16 region code per neuron
    region_names: list[str] = field(default_factory=list)  # code -> name
    stim_frame: np.ndarray | None = None  # (M,) int64 row (imaging frame) of each stimulation
    stim_targets: np.ndarray | None = None  # (M, K) int32 neuron ids, padded with -1
    camera_t_ns: np.ndarray | None = None  # (Tc,) int64 camera frame times, ns
    camera_tail: np.ndarray | None = None  # (Tc, S) float32 raw camera-rate segment angles
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # simulator ground truth
    meta: dict = field(default_factory=dict)  # config, versions, seed, source

    def __post_init__(self):
        T = len(self.traces)
        if self.traces.ndim != 2:
            raise ValueError(f"Session.traces: expected (frames, neurons), got shape {self.traces.shape}")
        for name in ("t_ns", "tail", "stimulus"):
            value = getattr(self, name)
            if value is not None and len(value) != T:
                raise ValueError(f"Session.{name}: {len(value)} frames, traces has {T}; "
                                 "every per-frame array must have one row per imaging frame")

    @property
    def n_frames(self) -> int:
        return self.traces.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.traces.shape[1]


def read(path: str | Path) -> Session:
    """Read a session: a Rig recording (``.mcap``), a suite2p folder or an NWB file."""
    from rig import recording  # the recorder owns the file formats

    return recording.read_session(Path(path))


def write(path: str | Path, session: Session) -> Path:
    """Write ``session`` as a Rig recording that ``rig replay`` and ``read`` accept."""
    from rig import recording

    return recording.write_session(Path(path), session)
