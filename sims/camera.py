"""Simulated behaviour camera: a head-restrained larva's tail drawn as grey frames.

Stands in for the camera at the rig, so that pixels -> tracked angles -> decoder labels ->
stimulation gate runs headless. ``CameraRenderer.render(angles)`` draws a tapering tail at
the given segment angles (the tracker's convention: rad from the resting direction, image
axes, y down) behind a static body and eyes, on a textured background with sensor noise.
``fish_tail`` takes the simulated fish's own camera-rate tail for runs without the bus.
``SimCamera`` is the node: it renders the tail the simulated microscope publishes on
``sim.tail`` and traces it with the real tracker (``rig.camera.node.Pipeline``).

The render kernel lives here rather than in ``sims/_kernels.py`` (the fish simulator's),
since nothing else in ``sims`` draws pixels.
"""
from __future__ import annotations

import math

import msgspec
import numpy as np
from numba import njit

from rig.camera.node import Pipeline, TrackSettings, make_tracker
from rig.messages import SIM_TAIL
from rig.node import Node, Verb


@njit(cache=True)
def _render(out, texture, noise, dy, points, seg_len, w_base, w_tip, amp):
    """Write one frame into ``out`` (H, W) uint8 in place.

    texture : (H, W) float32 static scene (background, body, eyes), grey levels.
    noise : (H, W) float32 sensor noise, read with a row shift ``dy`` (frames differ).
    points : (S + 1, 2) float64 tail centreline, x, y pixels.
    w_base, w_tip : tail width at base and tip, pixels.  amp : signed tail contrast.
    """
    h, w = out.shape
    n_seg = points.shape[0] - 1
    length = seg_len * n_seg
    xmin = points[0, 0]
    xmax = xmin
    ymin = points[0, 1]
    ymax = ymin
    for i in range(1, n_seg + 1):
        xmin = min(xmin, points[i, 0])
        xmax = max(xmax, points[i, 0])
        ymin = min(ymin, points[i, 1])
        ymax = max(ymax, points[i, 1])
    pad = 0.5 * w_base + 2.0
    x0 = max(0, int(xmin - pad))
    x1 = min(w, int(xmax + pad) + 1)
    y0 = max(0, int(ymin - pad))
    y1 = min(h, int(ymax + pad) + 1)
    for i in range(h):
        ni = (i + dy) % h
        for j in range(w):
            v = texture[i, j] + noise[ni, j]
            if y0 <= i < y1 and x0 <= j < x1:
                best = 1.0e30
                arc = 0.0
                for s in range(n_seg):
                    ax = points[s, 0]
                    ay = points[s, 1]
                    dx = points[s + 1, 0] - ax
                    dyy = points[s + 1, 1] - ay
                    t = ((j - ax) * dx + (i - ay) * dyy) / (dx * dx + dyy * dyy)
                    t = min(1.0, max(0.0, t))
                    ex = ax + t * dx - j
                    ey = ay + t * dyy - i
                    d2 = ex * ex + ey * ey
                    if d2 < best:
                        best = d2
                        arc = (s + t) * seg_len
                half = 0.5 * (w_base + (w_tip - w_base) * arc / length)
                cover = half - math.sqrt(best) + 0.5  # 1-px anti-aliased edge
                if cover > 0.0:
                    v += amp * min(cover, 1.0)
            if v < 0.0:
                v = 0.0
            elif v > 255.0:
                v = 255.0
            out[i, j] = np.uint8(v + 0.5)


def _smooth_noise(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``scale_px`` (FFT filter)."""
    h, w = shape
    white = rng.standard_normal(shape)
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    filt = np.exp(-2.0 * (math.pi * scale_px) ** 2 * (kx ** 2 + ky ** 2))
    field = np.fft.irfft2(np.fft.rfft2(white) * filt, s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


class CameraRenderer:
    """Draw the simulated fish's tail as uint8 frames.

    Parameters
    ----------
    shape : (H, W) frame size, pixels.
    n_segments : tail segments S (the angles given to ``render``).
    base : (x, y) tail base, pixels; default a third of the way down the centre line.
    direction : resting tail direction, rad (image axes; pi/2 points down the frame).
    length : tail length, pixels; default 55% of the frame height.
    polarity : "dark" (dark fish, bright background) or "bright".
    contrast : tail-to-background contrast, grey levels.
    texture : std of the background's smooth texture, grey levels.
    noise : std of per-frame sensor noise, grey levels.
    seed : seeds texture and noise, so runs repeat.
    """

    N_NOISE = 8  # noise frames in the bank; each frame picks one and a random row shift

    def __init__(self, shape=(256, 256), n_segments: int = 10, *, base=None,
                 direction: float = math.pi / 2, length: float | None = None,
                 polarity: str = "dark", contrast: float = 70.0, texture: float = 8.0,
                 noise: float = 4.0, width_base: float = 7.0, width_tip: float = 2.0,
                 seed: int = 0):
        h, w = (int(v) for v in shape)
        if h < 16 or w < 16:
            raise ValueError(f"CameraRenderer.shape: expected at least 16x16 pixels, got {shape}")
        if polarity not in ("dark", "bright"):
            raise ValueError(f"CameraRenderer.polarity: expected 'dark' or 'bright', "
                             f"got {polarity!r}")
        self.shape = (h, w)
        self.n_segments = int(n_segments)
        self.base = np.asarray(base if base is not None else (w / 2.0, h / 3.0), dtype=np.float64)
        self.direction = float(direction)
        self.length = float(length if length is not None else 0.55 * h)
        self.polarity = polarity
        self.seg_len = self.length / self.n_segments
        self.width_base = float(width_base)
        self.width_tip = float(width_tip)
        rng = np.random.default_rng(seed)
        self._rng = rng
        level, sign = (170.0, -1.0) if polarity == "dark" else (40.0, 1.0)
        self._amp = sign * float(contrast)
        tex = level + texture * _smooth_noise(rng, self.shape, 3.0)
        self.texture = self._draw_body(tex, sign * contrast).astype(np.float32)
        self._noise = (noise * rng.standard_normal((self.N_NOISE, h, w))).astype(np.float32)
        self.frame = np.zeros(self.shape, dtype=np.uint8)
        self.points = np.zeros((self.n_segments + 1, 2))

    def _draw_body(self, tex: np.ndarray, amp: float) -> np.ndarray:
        """Static trunk and eyes ahead of the tail base (the head is restrained)."""
        h, w = self.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        d = np.array([math.cos(self.direction), math.sin(self.direction)])
        perp = np.array([-d[1], d[0]])
        L = self.length
        rel_x = xx - self.base[0]
        rel_y = yy - self.base[1]
        along = rel_x * d[0] + rel_y * d[1]
        across = rel_x * perp[0] + rel_y * perp[1]
        # trunk: ellipse from the base forward to the head, a bit wider than the tail base
        trunk = ((along + 0.24 * L) / (0.22 * L)) ** 2 + (across / (0.75 * self.width_base)) ** 2
        tex = tex + amp * 0.8 * np.clip((1.0 - trunk) * 4.0, 0.0, 1.0)
        for side in (-1.0, 1.0):  # eyes: the darkest (or brightest) spots in the frame
            ex = along + 0.42 * L
            ey = across - side * 0.09 * L
            eye = (ex / (0.05 * L)) ** 2 + (ey / (0.04 * L)) ** 2
            tex = tex + amp * 1.3 * np.clip((1.0 - eye) * 4.0, 0.0, 1.0)
        return tex

    def tracker_geometry(self) -> dict:
        """Keyword arguments that set a ``TailTracker`` on this fish (base, direction, ...)."""
        return dict(base=tuple(self.base), direction=self.direction, length=self.length,
                    n_segments=self.n_segments, polarity=self.polarity)

    def render(self, angles: np.ndarray) -> np.ndarray:
        """Draw one frame; return the renderer's (H, W) uint8 buffer (overwritten next call).

        Parameters
        ----------
        angles : (S,) segment angles, rad from the resting direction.
        """
        a = np.asarray(angles, dtype=np.float64)
        if a.shape != (self.n_segments,):
            raise ValueError(f"CameraRenderer.render angles: shape {a.shape}, expected "
                             f"({self.n_segments},) segment angles in rad")
        th = self.direction + a
        np.cumsum(np.cos(th), out=self.points[1:, 0])
        np.cumsum(np.sin(th), out=self.points[1:, 1])
        self.points[1:] *= self.seg_len
        self.points[1:] += self.base
        self.points[0] = self.base
        k = int(self._rng.integers(self.N_NOISE))
        dy = int(self._rng.integers(self.shape[0]))
        _render(self.frame, self.texture, self._noise[k], dy, self.points, self.seg_len,
                self.width_base, self.width_tip, self._amp)
        return self.frame


def fish_tail(seconds: float, fps: float, n_segments: int = 10, *, seed: int = 0,
              spont_bout_hz: float = 1.0):
    """Camera-rate tail of the simulated fish (``sims.fish``), for runs without the bus.

    A small fish (50 neurons) is enough: only its behaviour (motor integrators, bouts as
    travelling waves with turn bias) is used here.

    Returns
    -------
    angles : (T, S) float32 true segment angles, rad from rest (+ = left).
    t_ns : (T,) int64 camera frame times.
    bouts : (B, 2) int64 first and one-past-last camera frame of each true bout.
    """
    from sims.fish import Fish, FishConfig  # lazy: rendering alone needs no fish

    vol_hz = min(5.0, fps)
    fish = Fish(FishConfig(n_neurons=50, k_presyn=2, volume_rate_hz=vol_hz, camera_rate_hz=fps,
                           n_segments=n_segments, seed=seed, spont_bout_hz=spont_bout_hz))
    tails, times, flags = [], [], []
    for _ in range(int(math.ceil(seconds * vol_hz))):
        v = fish.step()
        tails.append(v.tail)
        times.append(v.tail_t_ns)
        flags.append(v.tail_bout)
    angles = np.concatenate(tails)
    flag = np.concatenate(flags).astype(np.int8)
    edges = np.diff(np.concatenate([[0], flag, [0]]))
    bouts = np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)
    return angles, np.concatenate(times), bouts.astype(np.int64)


class SimCamera(Node):
    """The simulated camera: renders ``sim.tail``, traces it with the real tracker."""

    class Settings(TrackSettings, forbid_unknown_fields=True):
        height: int = 256
        width: int = 256
        contrast: float = 70.0  # grey levels
        noise: float = 4.0  # sensor noise std, grey levels
        texture: float = 8.0  # background texture std, grey levels

    subscribe = (SIM_TAIL,)

    def setup(self) -> None:
        self.renderer = None
        self.pipe = None
        # Load the render and tracking kernels now, so the first volume is on time; the
        # segment count is the simulator's, re-made at the first message if it differs.
        self._start(self.settings.n_segments, 200.0)
        self.renderer.render(np.zeros(self.settings.n_segments, np.float32))
        self.sq_err = 0.0
        self.n_err = 0
        self.true_bouts = 0
        self._was_bout = False
        self.camera_index = 0
        self.last_t = None

    def on_control(self, verb, args: dict) -> None:
        if verb in (Verb.PAUSE, Verb.STOP):
            # The simulator's camera clock runs on through a pause: the gap at the next
            # frames is the pause, not camera frames lost.
            self.last_t = None

    def _start(self, n_seg: int, fps: float) -> None:
        s = self.settings
        self.renderer = CameraRenderer((s.height, s.width), n_seg, polarity=s.polarity,
                                       contrast=s.contrast, noise=s.noise, texture=s.texture,
                                       seed=self.seed)
        g = self.renderer.tracker_geometry()
        g.pop("n_segments")
        g.pop("polarity")
        s = msgspec.structs.replace(s, n_segments=n_seg)
        tracker = make_tracker(g, s, self.renderer.shape)
        tracker.warm_up()
        self.pipe = Pipeline(self, tracker, fps, s)

    def on_message(self, msg) -> None:
        true = msg["angles"]  # (n_cam, S) rad
        t_ns = msg["t_ns"]  # (n_cam,) acquisition clock
        if true.ndim != 2 or len(t_ns) != len(true):
            self.counters["bad_sim_tail"] += 1
            return
        fps = float(msg.meta.get("camera_rate_hz", 200.0))
        if self.pipe.tracker.n_segments != true.shape[1] or self.pipe.bouts.fps != fps:
            self._start(true.shape[1], fps)
        bout = msg.arrays.get("bout")
        dt = 1e9 / fps
        for j in range(len(true)):
            if self.last_t is not None and t_ns[j] - self.last_t > 1.5 * dt:
                # the simulator skipped camera time (a dropped sim.tail message)
                self.camera_index += int(round((t_ns[j] - self.last_t) / dt)) - 1
            self.last_t = int(t_ns[j])
            image = self.renderer.render(true[j])
            angles = self.pipe.process(image, self.camera_index, int(t_ns[j]), msg.frame)
            self.camera_index += 1
            if np.all(np.isfinite(angles)):
                self.sq_err += float(np.sum((angles - true[j]) ** 2))
                self.n_err += angles.size
            if bout is not None:
                self.true_bouts += bool(bout[j]) and not self._was_bout
                self._was_bout = bool(bout[j])
        if len(t_ns):
            self.pipe.publish_label(msg.frame, msg.t_acq_ns, int(t_ns[0]), int(t_ns[-1]) + 1)
        self.pipe.maybe_publish_stats(self._truth_stats())

    def _truth_stats(self) -> dict:
        rms = math.degrees(math.sqrt(self.sq_err / self.n_err)) if self.n_err else float("nan")
        return {"tracked_vs_true_rms_deg": rms, "true_bouts": self.true_bouts}

    def stats(self) -> dict:
        return {**(self.pipe.stats() if self.pipe else {}), **self._truth_stats()}

    def summary(self) -> dict:
        return self.stats()
