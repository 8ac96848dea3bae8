"""Anatomy and ground-truth connectivity of the simulated fish, and stimulation responses.

Everything fixed at construction lives in ``Anatomy``: positions in a brain-shaped volume
split into named regions, what each neuron is tuned to, and the sparse directed graph
(each neuron has exactly ``k`` distinct presynaptic partners, drawn uniformly, no self
loops). The graph acts only through photostimulation, exactly as the group-testing model
of Draelos et al. (2020) assumes: an OR channel over presynaptic partners, flipped by
false negatives (q) and false positives (p). Spontaneous dynamics do not use it, so the
p/q model is exact and the connectivity scores measure the planner and decoder alone.

Coordinates, um: x rostro-caudal (0 = rostral tip), y left (+) / right (-), z dorsal (+).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name, centres (bilateral regions have two), radii (x, y, z) um, fraction of neurons.
REGIONS = (
    ("telencephalon", ((110.0, 0.0, 160.0),), (90.0, 110.0, 80.0), 0.14),
    ("habenula", ((180.0, 60.0, 230.0), (180.0, -60.0, 230.0)), (30.0, 30.0, 25.0), 0.03),
    ("pretectum", ((280.0, 90.0, 120.0), (280.0, -90.0, 120.0)), (50.0, 45.0, 45.0), 0.08),
    ("tectum", ((360.0, 150.0, 180.0), (360.0, -150.0, 180.0)), (120.0, 90.0, 80.0), 0.25),
    ("cerebellum", ((480.0, 120.0, 200.0), (480.0, -120.0, 200.0)), (60.0, 80.0, 60.0), 0.10),
    ("hindbrain_l", ((660.0, 75.0, 110.0),), (190.0, 70.0, 85.0), 0.20),
    ("hindbrain_r", ((660.0, -75.0, 110.0),), (190.0, 70.0, 85.0), 0.20),
)
REGION_NAMES = tuple(r[0] for r in REGIONS)

# Latent indices (see sims.fish.LATENT_NAMES) that behaviour-carrying neurons follow,
# per side: motor integrator (leads bouts), bout activity now, bout activity one volume late.
_MOTOR_SOURCES = {1: (4, 6, 8), 2: (5, 7, 9)}
# Per source kind: (gain Hz, threshold) of the soft-quadratic rate; integrators fire only
# on strong drive, bout neurons on any bout.
_MOTOR_GAIN = ((5.0, 0.4), (25.0, 0.0), (20.0, 0.0))


@dataclass
class Anatomy:
    positions: np.ndarray  # (N, 3) float32 um
    regions: np.ndarray  # (N,) int16 index into region_names
    region_names: tuple
    tuning: np.ndarray  # (N,) int8 preferred stimulus code (1..4), -1 untuned
    src: np.ndarray  # (N,) int16 latent each neuron follows, -1 none
    gain: np.ndarray  # (N,) float32 Hz
    thresh: np.ndarray  # (N,) float32
    base: np.ndarray  # (N,) float32 spontaneous rate, Hz
    brightness: np.ndarray  # (N,) float32 relative baseline brightness
    motor_mask: np.ndarray  # (N,) bool carries behaviour
    motor_side: np.ndarray  # (N,) int8 0 none, 1 left, 2 right
    presyn: np.ndarray  # (N, k) int32 presynaptic partner ids


def _region_counts(n: int) -> np.ndarray:
    frac = np.array([r[3] for r in REGIONS])
    counts = np.floor(frac / frac.sum() * n).astype(np.int64)
    counts[np.argsort(-(frac / frac.sum() * n - counts))[: n - counts.sum()]] += 1
    return counts


def _ellipsoid(rng: np.random.Generator, centre, radii, m: int) -> np.ndarray:
    d = rng.standard_normal((m, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = rng.random(m)[:, None] ** (1.0 / 3.0)
    return np.asarray(centre) + d * r * np.asarray(radii)


def draw_presyn(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n, k) int32: k distinct presynaptic partners per neuron, uniform, never itself."""
    pre = rng.integers(0, n - 1, size=(n, k))
    pre += pre >= np.arange(n)[:, None]  # skip self
    while True:
        srt = np.sort(pre, axis=1)
        dup = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
        if dup.size == 0:
            return pre.astype(np.int32)
        redraw = rng.integers(0, n - 1, size=(dup.size, k))
        pre[dup] = redraw + (redraw >= dup[:, None])


def draw_presyn_heavy(rng: np.random.Generator, n: int, k_min: int = 3, k_max: int = 40,
                      shape: str = "power", exponent: float = 2.0,
                      hub_sigma: float = 0.0) -> np.ndarray:
    """Ragged connectivity with a heavy-tailed in-degree, for held-out planner benchmarks.

    Parameters
    ----------
    n : neurons; k_min, k_max : in-degree range (1 <= k_min <= k_max < n).
    shape : "power" draws in-degrees with P(k) ~ k^-exponent on [k_min, k_max]; "lognormal"
        draws exp(N(log k_min + 1, 0.8)) clipped to the range (a broader body, a long tail).
    hub_sigma : presynaptic partners are drawn with probability ~ exp(hub_sigma * N(0, 1))
        per neuron (0: uniform; > 0: hubs with many outputs).

    Returns
    -------
    (n, k_max) int32: row j holds j's presynaptic partners, distinct, never j, padded
    with -1 (``stim.model.score`` and ``simulate_outcome`` read the padding).
    """
    if not 1 <= k_min <= k_max < n:
        raise ValueError(f"k_min={k_min}, k_max={k_max}: need 1 <= k_min <= k_max < n={n}")
    ks = np.arange(k_min, k_max + 1)
    if shape == "power":
        p = ks.astype(float) ** -exponent
        deg = rng.choice(ks, size=n, p=p / p.sum())
    elif shape == "lognormal":
        deg = np.clip(np.round(np.exp(rng.normal(np.log(k_min) + 1.0, 0.8, n))), k_min, k_max)
    else:
        raise ValueError(f"shape={shape!r}: use 'power' or 'lognormal'")
    w = np.exp(hub_sigma * rng.standard_normal(n))
    out = np.full((n, k_max), -1, dtype=np.int32)
    for j in range(n):
        wj = w.copy()
        wj[j] = 0.0  # never itself
        out[j, : int(deg[j])] = np.sort(rng.choice(n, size=int(deg[j]), replace=False,
                                                   p=wj / wj.sum()))
    return out


def build_anatomy(c, rng: np.random.Generator) -> Anatomy:
    """Draw positions, regions, tuning, rates and the graph for a ``FishConfig`` ``c``."""
    n = c.n_neurons
    counts = _region_counts(n)
    regions = np.repeat(np.arange(len(REGIONS), dtype=np.int16), counts)
    pos = np.empty((n, 3), np.float64)
    start = 0
    for (name, centres, radii, _), m in zip(REGIONS, counts):
        side = rng.integers(0, len(centres), size=m)
        for s, centre in enumerate(centres):
            idx = start + np.flatnonzero(side == s)
            pos[idx] = _ellipsoid(rng, centre, radii, idx.size)
        start += m
    # Shuffle ids so that a neuron's index says nothing about its region.
    perm = rng.permutation(n)
    regions, pos = regions[perm], pos[perm]

    tuning = np.full(n, -1, np.int8)
    src = np.full(n, -1, np.int16)
    gain = np.zeros(n, np.float32)
    thresh = np.zeros(n, np.float32)
    motor_side = np.zeros(n, np.int8)
    u = rng.random(n)
    kind = rng.integers(0, 4, size=n)
    lognorm = np.exp(0.4 * rng.standard_normal(n))
    visual = (("pretectum", c.tuned_fraction, 3.0), ("tectum", c.tuned_fraction / 2, 1.5))
    for name, frac, g in visual:
        sel = (regions == REGION_NAMES.index(name)) & (u < frac)
        tuning[sel] = kind[sel] + 1  # stimulus codes 1..4: forward, left, right, backward
        src[sel] = kind[sel]  # latent 0..3: the stimulus one-hots
        gain[sel] = g * lognorm[sel]
    kind3 = kind % 3
    for side, name in ((1, "hindbrain_l"), (2, "hindbrain_r")):
        sel = (regions == REGION_NAMES.index(name)) & (u < c.motor_fraction)
        motor_side[sel] = side
        src[sel] = np.asarray(_MOTOR_SOURCES[side])[kind3[sel]]
        gain[sel] = np.asarray([g for g, _ in _MOTOR_GAIN])[kind3[sel]] * lognorm[sel]
        thresh[sel] = np.asarray([t for _, t in _MOTOR_GAIN])[kind3[sel]]
    base = (0.3 * np.exp(0.5 * rng.standard_normal(n))).astype(np.float32)
    brightness = np.exp(0.4 * rng.standard_normal(n)).astype(np.float32)
    presyn = draw_presyn(rng, n, c.k_presyn)
    return Anatomy(positions=pos.astype(np.float32), regions=regions, region_names=REGION_NAMES,
                   tuning=tuning, src=src, gain=gain, thresh=thresh, base=base,
                   brightness=brightness, motor_mask=motor_side > 0, motor_side=motor_side,
                   presyn=presyn)


def draw_responses(rng: np.random.Generator, hit: np.ndarray, is_target: np.ndarray, c):
    """Who responds to one stimulation, when, and how strongly.

    Parameters
    ----------
    hit : (N,) bool, non-targets with a presynaptic partner among the targets.
    is_target : (N,) bool.
    c : FishConfig (p_false_pos, q_false_neg, response_volumes, response_spikes).

    Returns
    -------
    ids : (R,) int32 responders; delay : (R,) int64 volumes after the stimulated one;
    spikes : (R,) float32 spikes each fires (>= 1).
    """
    u = rng.random(hit.shape[0])
    resp = np.where(hit, u < 1.0 - c.q_false_neg, u < c.p_false_pos) & ~is_target
    ids = np.flatnonzero(resp).astype(np.int32)
    delay = rng.integers(0, c.response_volumes, size=ids.size)
    extra = rng.poisson(max(c.response_spikes - 1.0, 0.0), size=ids.size)
    spikes = (1.0 + extra).astype(np.float32)
    return ids, delay, spikes
