"""A tiny synthetic fish for tests and smoke runs when ``sims`` is not wanted.

A few "motor" neurons follow the tail (some linearly, some through vigour, a nonlinear
function), all through a calcium-like decay; the rest are AR(1) noise; every neuron's gain
drifts slowly. Tail: bouts of damped oscillation on six segments with increasing amplitude
along the tail. Not a model of a fish: the full simulator lives in ``sims``.
"""
from __future__ import annotations

import numpy as np

from rig.session import Session


def make_session(n_frames: int = 600, n_neurons: int = 200, n_motor: int = 8, n_segments: int = 6,
                 frame_rate_hz: float = 2.0, drift: float = 0.3, seed: int = 0) -> Session:
    """Return a ``Session`` whose tail is decodable from ``n_motor`` of ``n_neurons`` neurons.

    ``truth["motor"]`` holds the ids of the tail-carrying neurons.
    """
    if n_motor > n_neurons or n_frames < 10:
        raise ValueError(f"make_session: n_motor={n_motor} must be <= n_neurons={n_neurons} "
                         f"and n_frames={n_frames} >= 10")
    rng = np.random.default_rng(seed)
    T = n_frames
    env = np.zeros(T)
    t = 0
    while t < T:
        t += int(rng.integers(3, 12))
        L = int(rng.integers(2, 6))
        env[t:t + L] += rng.uniform(0.5, 1.5) * np.exp(-np.arange(min(L, max(T - t, 0))) / 2.0)
        t += L
    phase = np.cumsum(rng.uniform(1.0, 2.5, T))
    side = np.sign(np.sin(phase / 7.0) + 0.3)  # left/right bias that changes slowly
    seg = np.linspace(0.3, 1.0, n_segments)
    tail = (env * (0.6 * np.sin(phase) + 0.4 * side))[:, None] * seg[None, :]
    vigour = np.abs(env)
    decay = np.exp(-1.0 / (0.8 * frame_rate_hz))  # GCaMP-like ~0.8 s decay

    def calcium(u):
        c = np.zeros_like(u)
        for i in range(1, len(u)):
            c[i] = decay * c[i - 1] + u[i]
        return c

    motor = np.sort(rng.choice(n_neurons, n_motor, replace=False))
    x = np.zeros((T, n_neurons))
    noise = rng.normal(0, 0.3, (T, n_neurons))
    for i in range(1, T):
        x[i] = 0.8 * x[i - 1] + noise[i]
    for j, m in enumerate(motor):
        drive = tail[:, 0] * (1 if j % 2 else -1) if j % 3 else vigour  # linear or vigour
        x[:, m] = 2.0 * calcium(drive) + 0.3 * noise[:, m]
    phase0 = rng.uniform(0, 6, n_neurons)
    gain = 1.0 + drift * np.sin(2 * np.pi * np.arange(T)[:, None] / T + phase0)
    traces = (x * gain).astype(np.float32)
    return Session(traces=traces, t_ns=(np.arange(T) * 1e9 / frame_rate_hz).astype(np.int64),
                   frame_rate_hz=frame_rate_hz, tail=tail.astype(np.float32),
                   positions=rng.uniform(0, 400, (n_neurons, 3)).astype(np.float32),
                   truth={"motor": motor.astype(np.int64)}, meta={"source": "decoders.synthetic"})
