"""Record a whole simulated session, without the bus: ``rig simulate`` and training data.

``simulate(config, duration_s=...)`` steps a ``Fish`` volume by volume, optionally
stimulating a random ensemble every ``stim_every`` volumes, and returns a
``rig.session.Session`` holding activity, behaviour, the stimulus, the stimulations and the
ground truth (``Session.truth``, described in ``simulate``'s docstring).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from rig.session import Session
from sims.fish import LATENT_NAMES, STIMULUS_NAMES, Fish, FishConfig, stimulation_truth

log = logging.getLogger(__name__)


def simulate(config: FishConfig | None = None, n_frames: int | None = None,
             duration_s: float | None = None, stim_every: int | None = None,
             ensemble_size: int = 10, quiescent_only: bool = False,
             progress=None) -> Session:
    """Simulate a fish for ``n_frames`` volumes (or ``duration_s`` seconds).

    Parameters
    ----------
    config : FishConfig, default ``FishConfig()``.
    n_frames, duration_s : length of the run; give exactly one.
    stim_every : int, optional. Stimulate a random ensemble every this many volumes
        (first at volume ``stim_every``); None for no stimulation.
    ensemble_size : neurons per ensemble, drawn uniformly without replacement.
    quiescent_only : skip a scheduled stimulation while a bout is in progress (the closed
        loop's policy); the skipped ones are simply not made.
    progress : callable(done_frames, total_frames), optional, called every ~1 s.

    Returns
    -------
    Session with ``truth``:
        presyn (N, k) int32 presynaptic ids; tuning (N,) int8 preferred stimulus code or -1;
        motor_mask (N,) bool and motor_side (N,) int8 (1 left, 2 right) behaviour carriers;
        source (N,) int16 latent each neuron follows (meta["latent_names"]), -1 none;
        latents (T, L) float32 the latent drives per volume; bout (T,) bool;
        camera_bout (Tc,) bool; stim_in_bout (M,) bool; stim_responders and
        stim_postsynaptic as CSR: ids (R,) int32 with offsets ``*_ptr`` (M + 1,) int64,
        responders of stimulation m = ids[ptr[m]:ptr[m + 1]].
    """
    config = FishConfig() if config is None else config
    if (n_frames is None) == (duration_s is None):
        raise ValueError("simulate: give exactly one of n_frames or duration_s")
    if n_frames is None:
        if not duration_s > 0:
            raise ValueError(f"simulate(duration_s={duration_s}): must be > 0 seconds")
        n_frames = max(1, int(round(duration_s * config.volume_rate_hz)))
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"simulate(n_frames={n_frames!r}): need a positive integer")
    if stim_every is not None and (not isinstance(stim_every, (int, np.integer)) or stim_every < 1):
        raise ValueError(f"simulate(stim_every={stim_every!r}): need a positive integer of "
                         "volumes, or None for no stimulation")
    if stim_every is not None and not 1 <= ensemble_size <= config.n_neurons:
        raise ValueError(f"simulate(ensemble_size={ensemble_size}): use 1 .. n_neurons "
                         f"({config.n_neurons})")

    fish = Fish(config)
    n, s = config.n_neurons, config.n_segments
    traces = np.empty((n_frames, n), np.float32)
    tail = np.empty((n_frames, s), np.float32)
    stimulus = np.empty(n_frames, np.int8)
    t_ns = np.empty(n_frames, np.int64)
    bout = np.empty(n_frames, bool)
    latents = np.empty((n_frames, len(LATENT_NAMES)), np.float32)
    cam_t, cam_tail, cam_bout = [], [], []
    pick = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(99,)))
    t_last = time.monotonic()
    for v in range(n_frames):
        if stim_every is not None and v > 0 and v % stim_every == 0:
            if not (quiescent_only and fish.in_bout):
                fish.stimulate(pick.choice(n, size=ensemble_size, replace=False))
        vol = fish.step(out=traces[v])
        tail[v] = vol.tail_mean
        stimulus[v] = vol.stimulus
        t_ns[v] = vol.t_ns
        bout[v] = vol.bout
        latents[v] = vol.latents
        cam_t.append(vol.tail_t_ns)
        cam_tail.append(vol.tail)
        cam_bout.append(vol.tail_bout)
        if progress is not None and time.monotonic() - t_last > 1.0:
            t_last = time.monotonic()
            progress(v + 1, n_frames)
    if progress is not None:
        progress(n_frames, n_frames)

    stims = fish.stimulations
    m = len(stims)
    k_max = max((len(st.targets) for st in stims), default=0)
    stim_targets = np.full((m, k_max), -1, np.int32)
    for i, st in enumerate(stims):
        stim_targets[i, : len(st.targets)] = st.targets
    a = fish.anatomy
    truth = {
        "presyn": a.presyn, "tuning": a.tuning, "motor_mask": a.motor_mask,
        "motor_side": a.motor_side, "source": a.src, "latents": latents, "bout": bout,
        "camera_bout": np.concatenate(cam_bout), **stimulation_truth(stims),
    }
    meta = {
        "source": "sims.simulate", "config": config.to_dict(), "seed": config.seed,
        "latent_names": list(LATENT_NAMES), "stim_every": stim_every,
        "ensemble_size": ensemble_size if stim_every else 0, "quiescent_only": quiescent_only,
        "tail_units": "rad, + = left, segments head to tip",
        "position_axes": "x rostro-caudal, y left(+), z dorsal(+), um",
    }
    log.info("simulated %d volumes of %d neurons, %d stimulations, %d volumes with a bout",
             n_frames, n, m, int(bout.sum()))
    return Session(
        traces=traces, t_ns=t_ns, frame_rate_hz=float(config.volume_rate_hz), tail=tail,
        stimulus=stimulus, stimulus_names=list(STIMULUS_NAMES), positions=a.positions,
        regions=a.regions, region_names=list(a.region_names),
        stim_frame=np.array([st.frame for st in stims], np.int64), stim_targets=stim_targets,
        camera_t_ns=np.concatenate(cam_t), camera_tail=np.concatenate(cam_tail),
        truth=truth, meta=meta)

