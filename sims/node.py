"""The simulated microscope on the bus: a ``Fish`` stepped at the volume rate.

``SimMicroscope`` publishes per imaging volume, each with the frame index and its
acquisition time ``t_acq_ns`` (wall clock when the volume completed; ``meta.t_sim_ns`` is
the fish's own clock at the volume start):

* ``traces``: ``dff`` (N,) float32.
* ``stimulus``: no arrays; meta ``name``, ``code`` (the visual stimulus shown).
* ``sim.tail``: the true camera-rate tail of that volume for the simulated camera:
  ``angles`` (n_cam, S) float32 rad (+ = left, head to tip), ``t_ns`` (n_cam,) int64 wall
  clock of each camera frame (evenly spaced in real time, see ``_camera_wall_times``),
  ``t_sim_ns`` (n_cam,) int64, ``bout`` (n_cam,) bool; meta ``camera_rate_hz``.
* ``tail`` (setting ``publish_tail``, for runs without a camera node): mean angles (S,).
* ``frame`` (setting ``publish_frame``): ``image`` (H, W) uint16 of one plane
  (``sims.imaging.PlaneImager``).

At the first volume and every 5 s after (for dashboards that attach late): ``anatomy`` (``positions``, ``regions``, meta ``region_names``)
and ``sim.truth`` (``presyn`` (N, k) int32, ``tuning``, ``motor_mask``, ``motor_side``,
``source``) for the dashboard. For the recording, the same truth plus the growing
per-volume and per-stimulation truth (``bout``, ``latents``, ``tail_true``,
``stim_applied_frame``, ``stim_in_bout``, ``stim_responders``/``stim_postsynaptic`` CSR with
``*_ptr``; the names of ``sims.simulate``) goes to ``RUN_DIR/truth/NAME.npy``, rewritten
every ``truth_every_s`` (or less often, so rewrites take <= 2% of the time) and at
STOP/teardown; the recorder attaches it when it closes.

It subscribes to ``stim.fired`` and applies each to the fish at its next volume
(``Fish.stimulate``), publishing what happened on ``sim.stimulated`` (``targets``,
``responders``, ``postsynaptic``; meta ``in_bout``, ``fired_frame``; frame = the volume it
was applied in) - ground truth, for scoring only.
"""
from __future__ import annotations

import os
import time

import msgspec
import numpy as np

from rig.messages import (ANATOMY, FRAME, LOG, SIM_STIMULATED, SIM_TAIL, SIM_TRUTH, STIMULUS,
                          STIM_FIRED, TAIL, TRACES)
from rig.node import Node, Verb
from sims.fish import DEFAULT_SCHEDULE, LATENT_NAMES, Fish, FishConfig, stimulation_truth


class SimMicroscope(Node):
    """A simulated fish under a simulated microscope."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        n_neurons: int = 2000
        k_presyn: int = 5
        volume_rate_hz: float = 2.0
        camera_rate_hz: float = 200.0
        n_segments: int = 8
        p_false_pos: float = 0.05
        q_false_neg: float = 0.05
        indicator: str = "GCaMP6s"
        schedule: list[tuple[str, float]] = msgspec.field(
            default_factory=lambda: [tuple(e) for e in DEFAULT_SCHEDULE])  # (stimulus, s) cycled
        seed: int = -1  # -1: the run's seed
        realtime: bool = True  # False: as fast as possible (replay-speed tests, benchmarks)
        n_frames: int = 0  # stop after this many volumes (0: no limit)
        publish_tail: bool = False  # also publish true mean angles on `tail` (no camera node)
        publish_frame: bool = False
        frame_shape: tuple[int, int] = (256, 256)
        frame_z_um: float = 150.0
        frame_pixel_um: float = 3.0
        save_truth: bool = True  # also write RUN_DIR/truth/*.npy, which the recorder attaches
        # rewrite the growing truth arrays this often (wall clock), or less: see _periodic_save
        truth_every_s: float = 5.0

    subscribe = (STIM_FIRED,)

    def setup(self) -> None:
        s = self.settings
        config = FishConfig(
            n_neurons=s.n_neurons, k_presyn=s.k_presyn, volume_rate_hz=s.volume_rate_hz,
            camera_rate_hz=s.camera_rate_hz, n_segments=s.n_segments, p_false_pos=s.p_false_pos,
            q_false_neg=s.q_false_neg, indicator=s.indicator,
            schedule=tuple(tuple(e) for e in s.schedule),
            seed=s.seed if s.seed >= 0 else self.seed)
        # Load (or compile) the numba kernels on a tiny fish so the first volume is on time.
        warm = Fish(FishConfig(n_neurons=8, k_presyn=2, seed=0))
        warm.stimulate(np.array([0]))
        warm.step()
        self.fish = Fish(config)
        self.step_interval_s = 1.0 / s.volume_rate_hz if s.realtime else 0.0
        self.imager = None
        if s.publish_frame:
            from sims.imaging import PlaneImager

            self.imager = PlaneImager(self.fish.positions, z_um=s.frame_z_um, shape=s.frame_shape,
                                      pixel_um=s.frame_pixel_um, seed=config.seed)
        self.pending: list[tuple[np.ndarray, int]] = []
        self.protocol = "default"
        # Per-volume truth rows; grown by doubling so saving never converts long lists.
        self.rows = {"bout": _Rows((), bool), "latents": _Rows((len(LATENT_NAMES),), np.float32),
                     "tail_true": _Rows((s.n_segments,), np.float32)}
        self.truth_dir = self.run_dir / "truth"
        self.next_save = time.monotonic() + s.truth_every_s
        self.next_anatomy = 0.0
        if s.save_truth:
            self._save_truth(self._static_truth())
        self.n_bout_frames = 0
        self.n_stims = self.n_stims_in_bout = self.n_stims_refused = 0
        self.step_ns = 0
        self.t_first = None
        self.t_prev_acq = None
        self.cam_offset = None
        self.log.info("fish: %d neurons, %.3g Hz volumes, %s", s.n_neurons, s.volume_rate_hz,
                      "real time" if s.realtime else "as fast as possible")

    def on_message(self, msg) -> None:
        if msg.topic == STIM_FIRED:
            self.pending.append((np.array(msg["targets"], dtype=np.int32), msg.frame))

    def _static_truth(self) -> dict:
        a = self.fish.anatomy
        return {"presyn": a.presyn, "tuning": a.tuning, "motor_mask": a.motor_mask,
                "motor_side": a.motor_side, "source": a.src}

    def _dynamic_truth(self) -> dict:
        """Per-volume and per-stimulation truth so far, named as in ``sims.simulate``."""
        return {**{name: rows.view() for name, rows in self.rows.items()},
                **stimulation_truth(self.fish.stimulations)}

    def _save_truth(self, arrays: dict) -> None:
        """Write each array atomically, so the recorder never attaches half a file."""
        self.truth_dir.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            tmp = self.truth_dir / f".{name}.tmp.npy"
            np.save(tmp, array, allow_pickle=False)
            os.replace(tmp, self.truth_dir / f"{name}.npy")

    def _publish_truth(self) -> None:
        a = self.fish.anatomy
        self.publish(ANATOMY, {"positions": a.positions, "regions": a.regions},
                     {"region_names": list(a.region_names)})
        self.publish(SIM_TRUTH, self._static_truth(), {"config": self.fish.config.to_dict(),
                                                         "latent_names": list(LATENT_NAMES)})

    def on_control(self, verb, args) -> None:
        if verb is Verb.STOP and self.settings.save_truth:
            self._save_truth(self._dynamic_truth())
        elif verb is Verb.SET and args.get("key") == "protocol":
            self.set_protocol(str(args.get("value", "")))

    def set_protocol(self, name: str) -> None:
        """Switch the visual stimulus: "default"/"omr" (the configured schedule) or one
        stimulus held (still, forward, backward, left, right)."""
        if name in ("default", "omr"):
            schedule = tuple(tuple(e) for e in self.settings.schedule)
        else:
            schedule = ((name, 1.0),)
        try:
            self.fish.set_schedule(schedule)
        except ValueError as exc:
            self.log.warning("protocol %r refused: %s", name, exc)
            self.publish(LOG, meta={"level": "warning", "text": f"protocol {name!r}: {exc}"})
            return
        self.protocol = name
        self.log.info("visual protocol: %s", name)

    def teardown(self) -> None:
        if self.settings.save_truth and hasattr(self, "fish"):
            self._save_truth(self._dynamic_truth())

    def _apply_stimulations(self) -> None:
        for targets, fired_frame in self.pending:
            try:
                st = self.fish.stimulate(targets)
            except ValueError as exc:
                self.n_stims_refused += 1
                self.log.warning("stim.fired from frame %d not applied: %s", fired_frame, exc)
                continue
            self.n_stims += 1
            self.n_stims_in_bout += st.in_bout
            self.publish(SIM_STIMULATED, {"targets": st.targets, "responders": st.responders,
                                            "postsynaptic": st.postsynaptic},
                         {"in_bout": st.in_bout, "fired_frame": int(fired_frame)}, frame=st.frame,
                         t_acq_ns=time.time_ns())
        self.pending.clear()

    def step(self) -> None:
        s = self.settings
        fish = self.fish
        if s.n_frames and fish.frame >= s.n_frames:
            self.running = False
            return
        t0 = time.perf_counter_ns()
        if fish.frame == 0:
            self.t_first = time.monotonic()
        if time.monotonic() >= self.next_anatomy:  # again now and then, for late dashboards
            self.next_anatomy = time.monotonic() + 5.0
            self._publish_truth()
        self._apply_stimulations()
        vol = fish.step()
        t_acq = time.time_ns()
        v = vol.frame
        meta = {"t_sim_ns": vol.t_ns}
        self.publish(TRACES, {"dff": vol.dff}, meta, frame=v, t_acq_ns=t_acq)
        self.publish(STIMULUS, None, {"name": vol.stimulus_name, "code": vol.stimulus,
                                        "protocol": self.protocol, "t_sim_ns": vol.t_ns},
                     frame=v, t_acq_ns=t_acq)
        cam_wall = self._camera_wall_times(vol, t_acq)
        self.publish(SIM_TAIL, {"angles": vol.tail, "t_ns": cam_wall, "t_sim_ns": vol.tail_t_ns,
                                  "bout": vol.tail_bout},
                     {"camera_rate_hz": s.camera_rate_hz, "bout": vol.bout}, frame=v,
                     t_acq_ns=t_acq)
        if s.publish_tail:
            self.publish(TAIL, {"angles": vol.tail_mean}, meta, frame=v, t_acq_ns=t_acq)
        if self.imager is not None:
            self.publish(FRAME, {"image": self.imager.render(vol.dff)}, meta, frame=v,
                         t_acq_ns=t_acq)
        self.n_bout_frames += vol.bout
        self.rows["bout"].append(vol.bout)
        self.rows["latents"].append(vol.latents)
        self.rows["tail_true"].append(vol.tail_mean)
        if s.save_truth and time.monotonic() >= self.next_save:
            self._periodic_save()
        self.step_ns += time.perf_counter_ns() - t0

    # Saves may take at most this share of the wall clock (a long session's rewrite grows).
    SAVE_SHARE = 0.02

    def _periodic_save(self) -> None:
        """Rewrite the truth so far. Teardown writes it again, but STOP reaches every node at
        once and the recorder may attach RUN_DIR/truth before that last write: this copy is
        the fallback. Each rewrite is O(volumes so far), so the next waits at least
        ``1 / SAVE_SHARE`` times as long as this one took."""
        t0 = time.monotonic()
        self._save_truth(self._dynamic_truth())
        took = time.monotonic() - t0
        self.next_save = time.monotonic() + max(self.settings.truth_every_s, took / self.SAVE_SHARE)

    def _camera_wall_times(self, vol, t_acq: int) -> np.ndarray:
        """Wall-clock times of this volume's camera frames, never later than ``t_acq``.

        Real time: the simulated clock shifted by an offset, so frames stay exactly
        1/camera_rate apart (the camera node reads a larger gap as dropped frames). The
        offset is the smallest publish lag seen; it moves forward only when the fish has
        fallen more than a volume behind. As fast as
        possible: the frames are spread over the wall-clock span since the last volume.
        """
        dt_ns = round(1e9 * self.fish.dt)
        t_end = vol.t_ns + dt_ns
        if self.settings.realtime:
            lag = t_acq - t_end
            if self.cam_offset is None or lag - self.cam_offset > dt_ns:
                self.cam_offset = lag
            # A volume published earlier than any before moves the grid back a little (one
            # short gap) rather than stamping frames after their volume.
            self.cam_offset = min(self.cam_offset, lag)
            return self.cam_offset + vol.tail_t_ns
        t_prev = self.t_prev_acq if self.t_prev_acq is not None else t_acq - dt_ns
        self.t_prev_acq = t_acq
        frac = (vol.tail_t_ns - vol.t_ns) / dt_ns
        return t_prev + np.round(frac * (t_acq - t_prev)).astype(np.int64)

    def _figures(self) -> dict:
        frames = self.fish.frame
        wall = time.monotonic() - self.t_first if self.t_first is not None else 0.0
        return {"frames": frames,
                "sim_s": frames * self.fish.dt,
                # Volumes after the first, over the wall time since the first.
                "x_real_time": (frames - 1) * self.fish.dt / wall if wall > 0 else 0.0,
                "step_ms": self.step_ns / 1e6 / frames if frames else 0.0,
                "stims": self.n_stims}

    def stats(self) -> dict:
        return self._figures()

    def summary(self) -> dict:
        out = self._figures()
        frames = self.fish.frame
        out.update({"bout fraction": self.n_bout_frames / frames if frames else 0.0,
                    "stims in bout": self.n_stims_in_bout, "stims refused": self.n_stims_refused})
        return out


class _Rows:
    """An append-only array of rows of one shape, grown by doubling."""

    def __init__(self, shape: tuple, dtype):
        self._data = np.zeros((256, *shape), dtype)
        self._n = 0

    def append(self, row) -> None:
        if self._n == len(self._data):
            self._data = np.concatenate([self._data, np.zeros_like(self._data)])
        self._data[self._n] = row
        self._n += 1

    def view(self) -> np.ndarray:
        return self._data[: self._n]
