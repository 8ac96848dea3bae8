"""Imaging ↔ SLM coordinates: the calibration that puts spots on the targets' imaging positions.

``rig calibrate slm`` measures it at the rig: the SLM sends one spot at a time to a grid of
known far-field pixels (u, v) (each a blazed grating: exact, no hologram needed), the
imaging path photographs each spot (a camera, or a fluorescent slide imaged at the sample
plane), the spot's centroid in imaging pixels is found, and an affine map imaging px ->
far-field px is fitted by least squares (``method = "affine"``; or ``"slmsuite"``: slmsuite's
own Fourier calibration fits the map from a projected spot array, and Rig's one-at-a-time
spots only check it). With the imaging pixel size it becomes the (2, 4)
matrix of ``stim.hologram.Calibration`` (imaging µm (x, y, z, 1) -> (u, v)), written as a
JSON file that the SLM node loads (its ``calibration_file``). The file also holds the
measured points and residuals, so a lab can see how good the fit was.

An imager is any class with ``grab() -> (H, W) image`` and ``close()``, built as
``Class(device=the SLM device, **camera_settings)`` and named in the SLM node's
``[calibrate]`` table (``IMAGERS`` or ``"package.module:Class"``, see ``rig.devices``).
``ReaderImager`` takes the microscope's own frames (a fluorescent slide at the sample plane,
seen by the imaging path: the calibration is then in exactly the pixels the ROIs are drawn
on); ``SlmsuiteCamera`` wraps any slmsuite camera, including its simulated one (a camera
must see the sample plane in the imaging frame's pixels, or the map is to the wrong frame).
"""
from __future__ import annotations

import datetime
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rig.node import load_class
from stim.hologram import Calibration

log = logging.getLogger(__name__)

FILE_KIND = "rig.slm_calibration"
FILE_VERSION = 1
IMAGERS = {"reader": "stim.calibration:ReaderImager",
           "slmsuite": "stim.calibration:SlmsuiteCamera"}


class CalibrationError(ValueError):
    """A calibration that cannot be measured or loaded; the message names file and field."""


class Imager:
    """The protocol of a calibration imager (a class need not inherit it, only match it)."""

    def grab(self) -> np.ndarray:
        """One (H, W) image of the imaging plane, taken now (after the SLM settled)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ReaderImager(Imager):
    """The microscope's frames, through a reader (``rig.readers``) as the Microscope node's.

    Parameters
    ----------
    device : the SLM device (unused: the frames come from the acquisition).
    reader, reader_settings : as the Microscope node's (``"zmq"`` with its endpoint, ...).
    frames : frames averaged per image; timeout_s : longest wait for one frame.

    ``grab`` first drops the frames already waiting (taken before the SLM changed) and the
    next one (it may have been mid-scan when the SLM changed), then averages ``frames``.
    """

    def __init__(self, device, reader: str = "zmq", reader_settings: dict | None = None,
                 frames: int = 4, timeout_s: float = 10.0):
        from rig.devices import open_device
        from rig.readers import READERS, Reader

        if frames < 1:
            raise CalibrationError(f"calibrate.camera_settings.frames = {frames}: give >= 1")
        self.reader = open_device(reader, Reader, READERS, "calibrate.camera_settings.reader",
                                  reader_settings, shape=None, timeout_s=timeout_s)
        self.frames = frames

    def grab(self) -> np.ndarray:
        from rig.readers import FramesStopped

        try:
            while self.reader.next_frame(timeout_s=0) is not None:
                pass
        except FramesStopped:
            pass  # none left waiting: what comes next shows the SLM's new pattern
        images = []
        for _ in range(self.frames + 1):
            frame = self.reader.next_frame()
            if frame is None:
                raise CalibrationError("calibrate: the acquisition ended during calibration")
            images.append(frame.image)
        return np.mean(images[1:], axis=0)

    def close(self) -> None:
        self.reader.close()


class SlmsuiteCamera(Imager):
    """Any slmsuite camera as an imager.

    Parameters
    ----------
    device : the SLM device; a camera whose ``__init__`` takes ``slm`` (slmsuite's
        ``SimulatedCamera``, which images a simulated SLM) is given ``device.slm``.
    driver : ``"package.module:Class"`` of the slmsuite camera, e.g.
        ``"slmsuite.hardware.cameras.thorlabs:ThorCam"``.
    **driver_settings : that class's arguments; lists become arrays (``M``, ``b``) except
        ``resolution``, which slmsuite wants as a tuple.
    """

    def __init__(self, device, driver: str, **driver_settings):
        try:
            cls = load_class(driver)
        except ImportError as exc:
            raise CalibrationError(f"calibrate.camera_settings.driver = {driver!r}: cannot "
                                   f"import it ({exc}); pip install 'rig[slm]'") from None
        kwargs = {k: tuple(v) if k == "resolution" else np.asarray(v, dtype=float)
                  if isinstance(v, list) else v for k, v in driver_settings.items()}
        if "slm" in inspect.signature(cls).parameters:
            kwargs["slm"] = device.slm
        self.camera = cls(**kwargs)

    def grab(self) -> np.ndarray:
        return np.asarray(self.camera.get_image(), dtype=np.float64)

    def close(self) -> None:
        self.camera.close()


@dataclass(frozen=True)
class Measurement:
    """What a calibration run measured and fitted."""

    calibration: Calibration
    slm_px: np.ndarray  # (K, 2) far-field pixels shown (u, v)
    imaging_px: np.ndarray  # (K, 2) where each spot was seen (x, y)
    um_per_px: float
    residual_px: np.ndarray  # (K,) |fit(imaging_px) - slm_px|, far-field pixels
    method: str = "affine"  # how the map was fitted (``measure``)


def grating(uv, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 phase that sends all light to far-field pixel ``uv`` (u, v)."""
    H, W = shape
    y, x = np.mgrid[0:H, 0:W]
    return np.mod(2 * np.pi * (uv[0] * x / W + uv[1] * y / H), 2 * np.pi).astype(np.float32)


def pattern(shape: tuple[int, int], grid: int = 4, extent: float = 0.6,
            zero_order_px: float = 3.0) -> np.ndarray:
    """(K, 2) far-field pixels (u, v) on a ``grid`` x ``grid`` square spanning ``extent`` of
    the field (0..1), integer, clear of the zero order."""
    if grid < 2 or not 0 < extent < 1:
        raise CalibrationError(f"calibrate: grid = {grid}, extent = {extent}: need grid >= 2 "
                               "and 0 < extent < 1")
    H, W = shape
    us = np.rint(np.linspace(-extent, extent, grid) * W / 2)
    vs = np.rint(np.linspace(-extent, extent, grid) * H / 2)
    uv = np.array([(u, v) for v in vs for u in us], dtype=float)
    return uv[np.hypot(uv[:, 0], uv[:, 1]) >= zero_order_px + 2]


def spot_centroid(image: np.ndarray, exclude_xy=None, exclude_px: float = 0.0,
                  half: int = 4) -> np.ndarray:
    """(x, y) intensity centroid, pixels, of the brightest spot (in a (2 half + 1)² window
    around the peak, above the image's median), ignoring a disc of ``exclude_px`` around
    ``exclude_xy`` (the zero order)."""
    img = np.asarray(image, dtype=float) - np.median(image)
    search = img
    if exclude_xy is not None and exclude_px > 0:
        y, x = np.mgrid[0:img.shape[0], 0:img.shape[1]]
        search = np.where(np.hypot(x - exclude_xy[0], y - exclude_xy[1]) < exclude_px,
                          -np.inf, img)
    iy, ix = np.unravel_index(np.argmax(search), img.shape)
    y0, x0 = max(iy - half, 0), max(ix - half, 0)
    win = np.clip(img[y0:iy + half + 1, x0:ix + half + 1], 0, None)
    if win.sum() <= 0:
        raise CalibrationError("calibrate: no spot in the image (all at background): is the "
                               "laser on, the camera exposed, the SLM in the path?")
    wy, wx = np.mgrid[y0:y0 + win.shape[0], x0:x0 + win.shape[1]]
    return np.array([(win * wx).sum(), (win * wy).sum()]) / win.sum()


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares affine ``dst ≈ [src, 1] @ A.T`` for (K, 2) point pairs, K >= 3."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    X = np.c_[src, np.ones(len(src))]
    if len(src) < 3 or np.linalg.matrix_rank(X) < 3:
        raise CalibrationError(f"calibrate: {len(src)} spot(s) seen, not enough in general "
                               "position to fit an affine map (need 3 not on one line)")
    coef, *_ = np.linalg.lstsq(X, dst, rcond=None)
    return coef.T


def slmsuite_fourier(device, imager: Imager, grid: int, extent: float,
                     power_mw: float) -> np.ndarray:
    """(2, 3) imaging px -> far-field px from slmsuite's ``FourierSLM.fourier_calibrate``
    (a ``grid`` x ``grid`` spot array over ``extent`` of the field, fitted by slmsuite).

    slmsuite's map is ij = M kxy + b, kxy in normalised k (sin of the angle); a far-field
    pixel of an (H, W) SLM of pitch p (in wavelengths) is (1 / (W px), 1 / (H py)) of k."""
    from stim.device import SlmsuiteSLM

    if not (isinstance(device, SlmsuiteSLM) and isinstance(imager, SlmsuiteCamera)):
        raise CalibrationError("calibrate.method = 'slmsuite' needs device = 'slmsuite' and "
                               "calibrate.camera = 'slmsuite'; use method = 'affine'")
    from slmsuite.hardware.cameraslms import FourierSLM

    H, W = device.shape
    side = 2 ** int(np.ceil(np.log2(max(H, W))))  # slmsuite's computational k-space, px
    pitch = max(1, int(extent * side / (grid - 1)))
    device.fire(power_mw * grid * grid)
    fit = FourierSLM(imager.camera, device.slm).fourier_calibrate(
        array_shape=[grid, grid], array_pitch=[pitch, pitch], plot=0)
    M = np.asarray(fit["M"], dtype=float)
    b = np.asarray(fit["b"], dtype=float).reshape(2)
    px, py = device.slm.pitch  # SLM pixel pitch in wavelengths, (x, y)
    A = np.diag([W * px, H * py]) @ np.linalg.inv(M)
    return np.c_[A, -A @ b]


def measure(device, imager: Imager, um_per_px: float, grid: int = 4, extent: float = 0.6,
            power_mw: float = 1.0, zero_order_px: float = 3.0, method: str = "affine",
            max_residual_px: float = 1.0) -> Measurement:
    """Show the calibration pattern spot by spot, find each in the imager, fit the map.

    Parameters
    ----------
    device : the SLM device (``stim.device.SLMDevice``); imager : an ``Imager``.
    um_per_px : imaging pixel size, µm (the microscope node's ``um_per_px``).
    grid, extent : the pattern (``pattern``); power_mw : laser power per spot, mW.
    zero_order_px : far-field radius kept clear of the zero order.
    method : "affine" (fit the spots seen) or "slmsuite" (``slmsuite_fourier``; the spots
        seen give its residuals).
    max_residual_px : a spot further than this (far-field px) from the fitted map fails the
        calibration: a missed spot, or slmsuite's array seen mirrored (it warns that it
        could not verify the orientation of a symmetric array).
    """
    if um_per_px <= 0:
        raise CalibrationError(f"calibrate: um_per_px = {um_per_px}: give the imaging pixel "
                               "size in µm (> 0)")
    if method not in ("affine", "slmsuite"):
        raise CalibrationError(f"calibrate.method = {method!r}: use 'affine' or 'slmsuite'")
    shape = tuple(device.shape)
    uv = pattern(shape, grid, extent, zero_order_px)
    device.display(np.zeros(shape, np.float32))  # flat: the zero order alone, to avoid
    device.fire(power_mw)
    zero = spot_centroid(imager.grab())
    seen = []
    for point in uv:
        device.display(grating(point, shape))
        device.fire(power_mw)
        seen.append(spot_centroid(imager.grab(), zero, 3.0))
    seen = np.array(seen)
    px_to_uv = (fit_affine(seen, uv) if method == "affine"
                else slmsuite_fourier(device, imager, grid, extent, power_mw))
    residual = np.hypot(*(np.c_[seen, np.ones(len(seen))] @ px_to_uv.T - uv).T)
    if residual.max() > max_residual_px:
        worst = int(np.argmax(residual))
        raise CalibrationError(
            f"calibrate ({method}): spot {uv[worst].tolist()} was seen {residual[worst]:.2f} "
            f"far-field px from where the fitted map puts it (max_residual_px = "
            f"{max_residual_px}): check the spot images (power, exposure, the zero order)"
            + (", or try another grid/extent, or method = 'affine'" if method == "slmsuite"
               else ""))
    matrix = np.c_[px_to_uv[:, :2] / um_per_px, np.zeros(2), px_to_uv[:, 2]]
    log.info("calibration (%s): %d spots, residual rms %.3f far-field px (max %.3f)", method,
             len(uv), np.sqrt(np.mean(residual ** 2)), residual.max())
    return Measurement(Calibration(matrix, shape, zero_order_px), uv, seen, um_per_px,
                       residual, method)


def save(path: str | Path, m: Measurement) -> Path:
    """Write the calibration file the SLM node loads (JSON, readable by eye)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"kind": FILE_KIND, "version": FILE_VERSION,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "method": {"affine": "affine fit to blazed-grating spots shown one at a time",
                      "slmsuite": "slmsuite FourierSLM.fourier_calibrate, checked on "
                                  "blazed-grating spots shown one at a time"}[m.method],
           "slm_shape": list(m.calibration.shape),
           "zero_order_px": m.calibration.zero_order_px,
           "imaging_um_per_px": m.um_per_px,
           # (x, y, z, 1) imaging um -> (u, v) far-field pixels from the zero order
           "matrix_um_to_slm": m.calibration.matrix.tolist(),
           "residual_slm_px": {"rms": float(np.sqrt(np.mean(m.residual_px ** 2))),
                               "max": float(m.residual_px.max())},
           "points": {"slm_px": m.slm_px.tolist(), "imaging_px": m.imaging_px.tolist()}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)  # never a half-written file for the node to load
    return path


def load(path: str | Path, shape: tuple[int, int] | None = None) -> Calibration:
    """The ``Calibration`` in a file written by ``save``; ``shape``: the SLM's (H, W), which
    must be the one it was measured on."""
    path = Path(path).expanduser()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibration_file {path}: no such file; make it with "
                               "`rig calibrate slm --config YOUR.toml`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"calibration_file {path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != FILE_KIND:
        raise CalibrationError(f"calibration_file {path}: not a Rig SLM calibration "
                               f"(kind should be {FILE_KIND!r})")
    bad = (KeyError, TypeError, ValueError, OverflowError)
    try:
        version = int(doc.get("version", FILE_VERSION))
    except bad:
        raise CalibrationError(f"calibration_file {path}: version {doc['version']!r} is not "
                               "a number") from None
    if version > FILE_VERSION:
        raise CalibrationError(f"calibration_file {path}: version {version}; this Rig reads "
                               f"{FILE_VERSION}: upgrade Rig")
    try:
        saved = tuple(int(n) for n in doc["slm_shape"])
        matrix = np.array(doc["matrix_um_to_slm"], dtype=float)
        zero = float(doc.get("zero_order_px", 3.0))
        if len(saved) != 2 or min(saved) < 1 or not zero >= 0:
            raise ValueError(f"slm_shape {list(saved)} / zero_order_px {zero}: expected "
                             "[H, W] > 0 and a radius >= 0")
        calibration = Calibration(matrix, saved, zero)
    except bad as exc:
        raise CalibrationError(f"calibration_file {path}: {type(exc).__name__}: {exc}; "
                               "measure it again with `rig calibrate slm`") from None
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
        raise CalibrationError(f"calibration_file {path}: matrix_um_to_slm is not finite "
                               "and invertible; measure it again with `rig calibrate slm`")
    if shape is not None and tuple(shape) != saved:
        raise CalibrationError(f"calibration_file {path}: measured on a {saved[0]} x "
                               f"{saved[1]} SLM, this one is {shape[0]} x {shape[1]}: "
                               "calibrate this SLM")
    return calibration
