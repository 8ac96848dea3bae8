"""The simulated larval zebrafish: brain activity, behaviour and photostimulation.

``Fish(config).step()`` advances one imaging volume and returns its dF/F (N,), the true
camera-rate tail angles of that volume and the visual stimulus; ``fish.stimulate(ids)``
applies a holographic stimulation. It is the stand-in for the microscope, camera and SLM
(``sims.node`` wraps it for the bus; ``sims.simulate`` records a whole session).

Model (one step = one volume of ``dt = 1 / volume_rate_hz`` s):

* Anatomy (``sims.connectivity.build_anatomy``): positions (um) in named regions; a
  minority of pretectal/tectal neurons is tuned to one motion direction, a minority of
  hindbrain neurons carries behaviour (motor integrator L/R, bout activity L/R now, or one
  volume late), everything else is untuned background.
* Behaviour, at the camera rate: left/right motor integrators (OU, tau 1 s) driven by the
  whole-field motion (forward drives both, left the left one, ...); a bout starts with a
  hazard rising with their sum (plus a spontaneous rate and stimulation arousal), lasts
  0.15-0.3 s as a travelling wave along the tail at 22-30 Hz, with a vigour set by the
  drive and a turn bias by the L-R imbalance (+ = left).
* Neurons: Poisson spikes at ``base + gain * f(latent - threshold)`` (soft-quadratic f),
  GCaMP rise/decay (difference of exponentials, peak ``amp`` dF/F per spike, saturating),
  a slow per-neuron log-gain drift (AR(1)), slow shared bleaching and shot noise whose
  variance scales with the fluorescence and the volume rate.
* Photostimulation: see ``Fish.stimulate``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from sims import _kernels as K
from sims.connectivity import Anatomy, build_anatomy, draw_responses

log = logging.getLogger(__name__)

STIMULUS_NAMES = ("still", "forward", "left", "right", "backward")
# Visual drive of the (left, right) motor integrators per stimulus: optomotor turning.
_DRIVE = {"still": (0.0, 0.0), "forward": (1.0, 1.0), "left": (1.2, 0.1),
          "right": (0.1, 1.2), "backward": (0.0, 0.0)}
DEFAULT_SCHEDULE = (("still", 8.0), ("forward", 8.0), ("still", 8.0), ("left", 8.0),
                    ("still", 8.0), ("right", 8.0), ("still", 8.0), ("backward", 8.0))

# Latent drive vector seen by the neurons: stimulus one-hots, then behaviour.
LATENT_NAMES = ("stim_forward", "stim_left", "stim_right", "stim_backward", "motor_l", "motor_r",
                "bout_l", "bout_r", "bout_l_lag1", "bout_r_lag1")


class FishConfigError(ValueError):
    """A FishConfig field out of range; the message names the field and the fix."""


@dataclass(frozen=True)
class FishConfig:
    """Everything that defines a simulated fish; with ``seed`` it fixes the run bit for bit."""

    n_neurons: int = 2000
    k_presyn: int = 5  # presynaptic partners per neuron in the ground-truth graph
    volume_rate_hz: float = 2.0  # whole-brain volumes; 30 for a single plane
    camera_rate_hz: float = 200.0  # tail camera
    n_segments: int = 8
    p_false_pos: float = 0.05  # a non-postsynaptic neuron responds to a stimulation
    q_false_neg: float = 0.05  # a postsynaptic neuron fails to respond
    schedule: tuple = DEFAULT_SCHEDULE  # ((stimulus name, seconds), ...) cycled
    seed: int = 0
    motor_fraction: float = 0.12  # of hindbrain neurons carrying behaviour (~4% of all)
    tuned_fraction: float = 0.5  # of pretectal neurons direction-tuned (tectum: half that)
    indicator: str = "GCaMP6s"  # or "GCaMP6f"
    spike_amp_dff: float = 0.15  # peak dF/F of one spike
    photons: float = 400.0  # mean baseline photons per neuron per second (sets shot noise)
    drift_sd: float = 0.1  # stationary sd of each neuron's log gain
    drift_tau_s: float = 120.0
    bleach_tau_s: float = 3600.0  # shared slow fluorescence decay
    response_volumes: int = 2  # responders fire within this many volumes of a stimulation
    target_spikes: float = 8.0  # spikes forced in a stimulated neuron
    response_spikes: float = 5.0  # mean spikes of a responding neuron
    spont_bout_hz: float = 0.2
    stim_arousal_hz: float = 0.3  # bout hazard added by a stimulation, decaying over 1 s
    t0_ns: int = 0  # simulated clock at frame 0
    backend: str = "numba"  # or "numpy": no numba (vectorised numpy + plain Python; baseline)

    def __post_init__(self):
        def bad(name, why):
            raise FishConfigError(f"FishConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("n_neurons", "k_presyn", "n_segments", "seed", "response_volumes", "t0_ns"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                bad(name, "must be an integer")
        for name in ("volume_rate_hz", "camera_rate_hz", "p_false_pos", "q_false_neg",
                     "motor_fraction", "tuned_fraction", "spike_amp_dff", "photons", "drift_sd",
                     "drift_tau_s", "bleach_tau_s", "target_spikes", "response_spikes",
                     "spont_bout_hz", "stim_arousal_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                bad(name, "must be a number")
        if not 2 <= self.n_neurons <= 1_000_000:
            bad("n_neurons", "use 2 .. 1,000,000 neurons (whole brain ~100,000)")
        if not 1 <= self.k_presyn < self.n_neurons:
            bad("k_presyn", "use 1 <= k_presyn < n_neurons")
        if not 1 <= self.n_segments <= 64:
            bad("n_segments", "use 1 .. 64 tail segments")
        if self.seed < 0:
            bad("seed", "use a non-negative integer")
        if not 0 < self.volume_rate_hz <= 1000:
            bad("volume_rate_hz", "use a rate in (0, 1000] Hz, e.g. 2 (volumes) or 30 (one plane)")
        if not self.volume_rate_hz <= self.camera_rate_hz <= 10000:
            bad("camera_rate_hz", "must be >= volume_rate_hz and <= 10000 Hz")
        for name in ("p_false_pos", "q_false_neg", "motor_fraction", "tuned_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, "must be a probability in [0, 1)")
        if self.indicator not in _INDICATORS:
            bad("indicator", f"choose one of {sorted(_INDICATORS)}")
        for name in ("spike_amp_dff", "photons", "drift_tau_s", "bleach_tau_s", "target_spikes",
                     "response_spikes", "spont_bout_hz"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        if self.drift_sd < 0:
            bad("drift_sd", "must be >= 0")
        if self.stim_arousal_hz < 0:
            bad("stim_arousal_hz", "must be >= 0 (0: stimulation leaves behaviour alone)")
        if not 1 <= self.response_volumes <= 16:
            bad("response_volumes", "use 1 .. 16 volumes")
        if self.backend not in ("numba", "numpy"):
            bad("backend", "choose 'numba' or 'numpy'")
        sched = tuple((str(n), float(d)) for n, d in self.schedule)
        if not sched:
            bad("schedule", "give at least one (stimulus, seconds) epoch")
        for name, dur in sched:
            if name not in STIMULUS_NAMES:
                bad("schedule", f"unknown stimulus {name!r}; choose from {STIMULUS_NAMES}")
            if not dur > 0:
                bad("schedule", f"epoch {name!r} lasts {dur} s; durations must be > 0")
        object.__setattr__(self, "schedule", sched)

    def to_dict(self) -> dict:
        return {f: getattr(self, f) if f != "schedule" else [list(e) for e in self.schedule]
                for f in self.__dataclass_fields__}


# Indicator kinetics: (rise tau, decay tau), s. GCaMP6s/f, Chen et al. 2013 (in vivo, approx).
_INDICATORS = {"GCaMP6s": (0.18, 1.8), "GCaMP6f": (0.05, 0.4)}


@dataclass
class Volume:
    """What one ``Fish.step`` returns (fresh arrays; ``dff`` is ``out`` when one was given)."""

    frame: int
    t_ns: int  # simulated time at the start of this volume's acquisition, ns
    dff: np.ndarray  # (N,) float32
    tail: np.ndarray  # (n_cam, S) float32 true segment angles, rad, + = left
    tail_t_ns: np.ndarray  # (n_cam,) int64 camera frame times, ns
    tail_bout: np.ndarray  # (n_cam,) bool camera frame inside a bout
    tail_mean: np.ndarray  # (S,) float32 mean angles over the volume
    stimulus: int  # code into STIMULUS_NAMES
    stimulus_name: str
    bout: bool  # some camera frame of this volume was in a bout
    latents: np.ndarray = field(repr=False, default=None)  # (len(LATENT_NAMES),) float64


@dataclass
class Stimulation:
    """Ground truth of one stimulation."""

    frame: int  # the volume during which it fired
    targets: np.ndarray  # (K,) int32
    responders: np.ndarray  # (R,) int32 non-targets made to respond (true + spurious)
    postsynaptic: np.ndarray  # (P,) int32 non-targets with a presynaptic partner in targets
    in_bout: bool  # fired while a bout was in progress (confounded)


class Fish:
    """A seeded, deterministic simulated fish; see the module docstring for the model."""

    def __init__(self, config: FishConfig | None = None):
        config = FishConfig() if config is None else config
        if not isinstance(config, FishConfig):
            raise TypeError(f"Fish(config): expected a FishConfig, got {type(config).__name__}")
        self.config = c = config
        seeds = np.random.SeedSequence(c.seed).spawn(4)
        # Separate streams: stimulating never shifts the neurons' or the behaviour's draws.
        self._rng_neuron, self._rng_beh, self._rng_stim = (
            np.random.default_rng(s) for s in seeds[1:])
        self.anatomy: Anatomy = build_anatomy(c, np.random.default_rng(seeds[0]))
        n = c.n_neurons
        self.dt = 1.0 / c.volume_rate_hz
        tau_r, tau_d = _INDICATORS[c.indicator]
        self._a_rise, self._a_decay = math.exp(-self.dt / tau_r), math.exp(-self.dt / tau_d)
        # Normalise the sampled kernel so one spike peaks at spike_amp_dff at any volume rate.
        lags = np.arange(int(10 * tau_d / self.dt) + 2)
        kern = self._a_decay ** lags - self._a_rise ** (lags + 1)
        self._amp = c.spike_amp_dff / float(kern.max())
        self._drift_a = math.exp(-self.dt / c.drift_tau_s)
        self._drift_s = c.drift_sd * math.sqrt(1.0 - self._drift_a ** 2)
        # Shot noise: photons per volume shrink with the volume rate, so 30 Hz is noisier.
        bright = self.anatomy.brightness * (c.photons * self.dt)
        self._inv_bright = (1.0 / bright).astype(np.float32)
        # State.
        self._log_gain = (c.drift_sd * self._rng_neuron.standard_normal(n)).astype(np.float32)
        self._c_rise = np.zeros(n, np.float32)
        self._c_decay = np.zeros(n, np.float32)
        self._forced = np.zeros((c.response_volumes + 1, n), np.float32)  # ring of pending spikes
        self._u = np.empty(n, np.float32)
        self._zn = np.empty(n, np.float32)
        self._zd = np.empty(n, np.float32)
        self._lat = np.zeros(len(LATENT_NAMES), np.float64)
        self._blat = np.zeros(K.N_BLAT, np.float64)
        self._bstate = np.zeros(K.N_BSTATE, np.float64)
        self._bparams = _behaviour_params(c)
        self._ratio = c.camera_rate_hz / c.volume_rate_hz
        n_cam_max = int(math.ceil(self._ratio)) + 1
        self._bz = np.empty(n_cam_max * K.BEH_NORMALS, np.float64)
        self._bu = np.empty(n_cam_max * K.BEH_UNIFORMS, np.float64)
        self._hit = np.zeros(n, bool)
        self._is_target = np.zeros(n, bool)
        self.set_schedule(c.schedule)
        self._neuron_step = K.neuron_step if c.backend == "numba" else K.neuron_step_numpy
        self._hits = K.postsynaptic_hits if c.backend == "numba" else K.postsynaptic_hits_numpy
        # The numpy backend uses no numba at all: the behaviour loop runs as plain Python.
        self._beh_step = K.behaviour_step if c.backend == "numba" else K.behaviour_step.py_func
        self.frame = 0
        self.stimulations: list[Stimulation] = []

    # -- ground truth -------------------------------------------------------------------
    @property
    def presyn(self) -> np.ndarray:
        """(N, k) int32: presynaptic partner ids of each neuron (ground-truth graph)."""
        return self.anatomy.presyn

    @property
    def positions(self) -> np.ndarray:
        return self.anatomy.positions

    @property
    def regions(self) -> np.ndarray:
        return self.anatomy.regions

    @property
    def region_names(self) -> list[str]:
        return list(self.anatomy.region_names)

    @property
    def tuning(self) -> np.ndarray:
        """(N,) int8 preferred stimulus code (index into STIMULUS_NAMES), -1 untuned."""
        return self.anatomy.tuning

    @property
    def motor_mask(self) -> np.ndarray:
        """(N,) bool: neurons whose activity follows behaviour (integrators, bouts)."""
        return self.anatomy.motor_mask

    def connectivity_matrix(self, sparse: bool = False):
        """W[i, j] = True when i is presynaptic to j, (N, N).

        Dense bool ndarray (small N only), or with ``sparse=True`` a scipy CSR matrix.
        """
        n, k = self.presyn.shape
        if sparse:
            from scipy import sparse as sp

            post = np.repeat(np.arange(n), k)
            return sp.csr_matrix((np.ones(n * k, bool), (self.presyn.ravel(), post)), shape=(n, n))
        w = np.zeros((n, n), bool)
        w[self.presyn, np.arange(n)[:, None]] = True
        return w

    # -- simulation ---------------------------------------------------------------------
    @property
    def in_bout(self) -> bool:
        """A swim bout is in progress now (at the end of the last camera frame)."""
        return bool(self._bstate[K.B_IN_BOUT])

    def set_schedule(self, schedule) -> None:
        """Show another visual protocol from now on: ((stimulus name, seconds), ...) cycled."""
        checked = replace(self.config, schedule=tuple(schedule)).schedule
        self._sched_names = [name for name, _ in checked]
        self._sched_ends = np.cumsum([d for _, d in checked])
        self._sched_start = getattr(self, "frame", 0)

    def stimulus_at(self, frame: int) -> int:
        """Visual stimulus code of imaging volume ``frame`` (schedule cycled)."""
        t = ((frame - self._sched_start) * self.dt) % self._sched_ends[-1]
        idx = int(np.searchsorted(self._sched_ends, t, side="right"))
        return STIMULUS_NAMES.index(self._sched_names[min(idx, len(self._sched_names) - 1)])

    def t_ns(self, frame: int) -> int:
        return self.config.t0_ns + round(frame * 1e9 / self.config.volume_rate_hz)

    def step(self, out: np.ndarray | None = None) -> Volume:
        """Advance one imaging volume.

        Parameters
        ----------
        out : (N,) float32, optional. Write dF/F here instead of a fresh array.
        """
        c = self.config
        n = c.n_neurons
        if out is None:
            out = np.empty(n, np.float32)
        elif out.shape != (n,) or out.dtype != np.float32:
            raise ValueError(f"Fish.step(out=...): need a float32 array of shape ({n},), "
                             f"got {out.dtype} {out.shape}")
        v = self.frame
        stim = self.stimulus_at(v)
        name = STIMULUS_NAMES[stim]
        # Camera frames whose time falls in [t_v, t_v+1): integer frame indices, no drift.
        j0 = math.ceil(v * self._ratio - 1e-9)
        j1 = math.ceil((v + 1) * self._ratio - 1e-9)
        n_cam = j1 - j0
        tail = np.empty((n_cam, c.n_segments), np.float32)
        bout = np.empty(n_cam, bool)
        self._rng_beh.standard_normal(out=self._bz[: n_cam * K.BEH_NORMALS])
        self._rng_beh.random(out=self._bu[: n_cam * K.BEH_UNIFORMS])
        lat = self._lat
        prev_l, prev_r = lat[6], lat[7]
        drive_l, drive_r = _DRIVE[name]
        self._beh_step(self._bstate, self._bparams, drive_l, drive_r, 1.0 / c.camera_rate_hz, n_cam,
                       self._bz, self._bu, tail, bout, self._blat)
        lat[:4] = 0.0
        if stim > 0:
            lat[stim - 1] = 1.0
        lat[4:8] = self._blat
        lat[8], lat[9] = prev_l, prev_r
        rng = self._rng_neuron
        rng.random(out=self._u, dtype=np.float32)
        rng.standard_normal(out=self._zn, dtype=np.float32)
        rng.standard_normal(out=self._zd, dtype=np.float32)
        t_s = v * self.dt
        row = v % self._forced.shape[0]
        a = self.anatomy
        self._neuron_step(lat, a.src, a.gain, a.thresh, a.base, self._forced[row], self._log_gain,
                          self._c_rise, self._c_decay, self._inv_bright, self._u, self._zn,
                          self._zd,
                          self.dt, self._a_rise, self._a_decay, self._amp, 5.0, self._drift_a,
                          self._drift_s, math.exp(-t_s / c.bleach_tau_s), out)
        self._forced[row] = 0.0
        tail_t = c.t0_ns + np.round(np.arange(j0, j1) * (1e9 / c.camera_rate_hz)).astype(np.int64)
        self.frame = v + 1
        return Volume(frame=v, t_ns=self.t_ns(v), dff=out, tail=tail, tail_t_ns=tail_t,
                      tail_bout=bout, tail_mean=tail.mean(axis=0), stimulus=stim,
                      stimulus_name=name, bout=bool(bout.any()), latents=lat.copy())

    def stimulate(self, targets) -> Stimulation:
        """Photostimulate ``targets`` during the next volume (``self.frame``).

        Every target fires ``target_spikes`` spikes in that volume. Every other neuron with a
        presynaptic partner among the targets responds with probability ``1 - q_false_neg``;
        every other neuron responds spuriously with probability ``p_false_pos``. A responder
        fires ~``response_spikes`` spikes in a volume drawn uniformly from the next
        ``response_volumes`` volumes (the stimulated one first), so its dF/F shows a transient.
        Stimulation also perturbs behaviour a little: it adds arousal (bout hazard
        +``stim_arousal_hz``, decaying over 1 s) and kicks each motor integrator by 0.05 per
        targeted behaviour-carrying neuron on that side.

        Confound: a stimulation that fires during a bout (``in_bout``), or that triggers one
        via the arousal, coincides with motor activity; the behaviour-carrying neurons then
        show bout transients in the response window whether or not they are postsynaptic,
        and their own responses hide under them. The truth records ``in_bout``; stimulate in
        quiescence.

        Returns
        -------
        Stimulation, the ground truth (also appended to ``self.stimulations``).
        """
        c = self.config
        t = np.asarray(targets)
        if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"Fish.stimulate(targets): need a non-empty 1-D integer array of "
                             f"neuron ids, got dtype {t.dtype} shape {t.shape}")
        if t.min() < 0 or t.max() >= c.n_neurons:
            raise ValueError(f"Fish.stimulate(targets): ids must lie in [0, {c.n_neurons}); "
                             f"got {t.min()}..{t.max()}")
        t = np.unique(t).astype(np.int32)
        is_t = self._is_target
        is_t[t] = True
        self._hits(self.anatomy.presyn, is_t, self._hit)
        post = np.flatnonzero(self._hit).astype(np.int32)
        resp, delay, spikes = draw_responses(self._rng_stim, self._hit, is_t, c)
        is_t[t] = False
        depth = self._forced.shape[0]
        row0 = self.frame % depth
        self._forced[row0, t] += np.float32(c.target_spikes)
        np.add.at(self._forced, ((row0 + delay) % depth, resp), spikes)
        a = self.anatomy
        st = self._bstate
        st[K.B_AROUSAL] += c.stim_arousal_hz
        st[K.B_M_L] += 0.05 * np.count_nonzero(a.motor_side[t] == 1)
        st[K.B_M_R] += 0.05 * np.count_nonzero(a.motor_side[t] == 2)
        rec = Stimulation(frame=self.frame, targets=t, responders=resp, postsynaptic=post,
                          in_bout=bool(st[K.B_IN_BOUT]))
        self.stimulations.append(rec)
        return rec


def stimulation_truth(stims: list[Stimulation]) -> dict[str, np.ndarray]:
    """Ground truth of a list of stimulations as flat arrays (for sessions and recordings).

    Returns ``stim_applied_frame`` (M,) int64, ``stim_in_bout`` (M,) bool, and for
    ``responders`` and ``postsynaptic`` a CSR pair: ``stim_responders`` (R,) int32 ids and
    ``stim_responders_ptr`` (M + 1,) int64, stimulation m's set being ids[ptr[m]:ptr[m + 1]].
    """
    out = {"stim_applied_frame": np.array([st.frame for st in stims], np.int64),
           "stim_in_bout": np.array([st.in_bout for st in stims], bool)}
    for key in ("responders", "postsynaptic"):
        ids = [getattr(st, key) for st in stims]
        out[f"stim_{key}"] = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)
        sizes = np.array([len(x) for x in ids], np.int64)
        out[f"stim_{key}_ptr"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return out


def _behaviour_params(c: FishConfig) -> np.ndarray:
    p = np.zeros(K.N_BPARAM, np.float64)
    p[K.P_TAU_M], p[K.P_SIGMA_M] = 1.0, 0.3
    p[K.P_H_SPONT], p[K.P_H_GAIN], p[K.P_H_THRESH] = c.spont_bout_hz, 0.8, 0.3
    p[K.P_TAU_AROUSAL] = 1.0
    p[K.P_DUR_MIN], p[K.P_DUR_SPAN] = 0.15, 0.15
    p[K.P_FREQ_MIN], p[K.P_FREQ_SPAN] = 22.0, 8.0
    p[K.P_VIGOUR], p[K.P_TURN_GAIN] = 0.7, 2.0
    p[K.P_REFR_MIN], p[K.P_REFR_SPAN] = 0.3, 0.4
    p[K.P_TAU_TURN], p[K.P_WAVELENGTH] = 0.04, 0.8
    return p
