"""Sessions recorded elsewhere: a suite2p output folder or an NWB file -> ``Session``.

suite2p (read with numpy, never imported: GPL-3): ``F.npy``, ``Fneu.npy`` (ROIs x frames),
``iscell.npy`` (ROIs x 2), ``stat.npy`` (dicts with ``med``, ``iplane``) and ``ops.npy``
(0.x) or ``settings.npy``/``db.npy``/``reg_outputs.npy`` (1.x) for the frame rate ``fs``.
A folder may be ``plane0`` itself, its ``suite2p`` parent or the folder above. ΔF/F is
``F − 0.7·Fneu`` against the causal running baseline of ``rig.readers.dff``.

``stat.npy`` and ``ops.npy`` are pickled object arrays; they are read with an unpickler
that builds numpy arrays, dicts, lists and scalars and refuses anything else, so a
crafted file cannot run code.

Behaviour: a ``.csv`` with a header row, a time column (``t``, ``time``, ``timestamp`` or
``time_s``, seconds from the first imaging frame) and one column per tail segment angle
(rad); or a ``.npy`` of shape (samples, 1 + S) whose first column is that time; or a ``.npy``
of shape (samples, S) with the times in ``<name>_t.npy`` beside it (``tail.npy`` +
``tail_t.npy``). It is kept
at camera rate and averaged over each imaging frame's interval for ``Session.tail``.

NWB (pynwb): ``processing/ophys`` ``DfOverF`` (preferred) or ``Fluorescence``
``RoiResponseSeries``; a behaviour ``TimeSeries`` (a name containing "tail" preferred) in
``processing/behavior`` or ``acquisition``.
"""
from __future__ import annotations

import csv
import logging
import pickle
import re
from pathlib import Path

import numpy as np

from rig.recording.format import RecordingError
from rig.session import Session

log = logging.getLogger(__name__)

NEUROPIL_COEFF = 0.7  # suite2p's default neuropil coefficient
_TIME_COLUMNS = ("t", "time", "timestamp", "timestamps", "time_s")


# -- safe object .npy -------------------------------------------------------------------
class _NumpyOnly(pickle.Unpickler):
    _allowed = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("builtins", "slice"), ("builtins", "complex"),
        ("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"), ("codecs", "encode"),
    }

    def find_class(self, module, name):
        allowed = (module, name) in self._allowed or (
            module.startswith("numpy") and name.endswith("DType"))  # numpy 2 dtype classes
        if allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to build {module}.{name}")


def load_npy(path: Path) -> np.ndarray:
    """``np.load`` that also reads suite2p's object arrays without running arbitrary code."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            array = _NumpyOnly(f, encoding="latin1").load()
    except FileNotFoundError:
        raise RecordingError(f"{path}: missing") from None
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise RecordingError(f"{path}: not a readable .npy file ({exc})") from None
    return np.asarray(array, dtype=object).reshape(shape)


def _dict(path: Path) -> dict:
    value = load_npy(path)
    value = value.item() if value.shape == () else value
    if not isinstance(value, dict):
        raise RecordingError(f"{path}: expected a dict saved with np.save, got {type(value)}")
    return value


# -- suite2p ------------------------------------------------------------------------------
def plane_folders(folder: Path) -> list[Path]:
    """The plane folders (holding ``F.npy``) of a suite2p output folder."""
    for candidate in (folder, folder / "suite2p"):
        if (candidate / "F.npy").is_file():
            return [candidate]
        planes = sorted(p for p in candidate.glob("plane*") if (p / "F.npy").is_file())
        if planes:
            return planes
    raise RecordingError(f"{folder}: no F.npy here, in plane*/ or in suite2p/plane*/: "
                         "not a suite2p output folder")


def _frame_rate(plane: Path) -> float | None:
    for name in ("ops.npy", "settings.npy", "db.npy", "reg_outputs.npy"):
        if (plane / name).is_file():
            fs = _find_key(_dict(plane / name), "fs")
            if fs:
                return float(fs)
    return None


def _find_key(d: dict, key: str):
    if key in d:
        return d[key]
    for value in d.values():
        if isinstance(value, dict) and (found := _find_key(value, key)) is not None:
            return found
    return None


def read_suite2p(folder: Path, behaviour: Path | None = None, frame_rate_hz: float | None = None,
                 only_cells: bool = True) -> Session:
    """A Session from a suite2p output folder (all planes side by side) and a tail file.

    Parameters
    ----------
    folder : ``plane0``, ``suite2p`` or their parent.
    behaviour : tail angles with timestamps (``.csv``/``.npy``); default: a ``behaviour.csv``
        / ``behaviour.npy`` / ``tail.csv`` / ``tail.npy`` file in ``folder``.
    frame_rate_hz : imaging volume rate; default: ``fs`` from ops/settings.
    only_cells : keep ROIs whose ``iscell`` label is 1.
    """
    folder = Path(folder)
    planes = plane_folders(folder)
    fc, positions, kept = [], [], []
    for z, plane in enumerate(planes):
        F = load_npy(plane / "F.npy")
        Fneu = load_npy(plane / "Fneu.npy")
        if F.ndim != 2 or Fneu.shape != F.shape:
            raise RecordingError(f"{plane}: F.npy {F.shape} and Fneu.npy {Fneu.shape} must "
                                 "both be (ROIs, frames)")
        keep = np.ones(len(F), dtype=bool)
        if only_cells and (plane / "iscell.npy").is_file():
            iscell = load_npy(plane / "iscell.npy")
            if len(iscell) != len(F):
                raise RecordingError(f"{plane / 'iscell.npy'}: {len(iscell)} rows, F.npy has "
                                     f"{len(F)} ROIs")
            keep = np.asarray(iscell).reshape(len(F), -1)[:, 0] > 0.5
        fc.append((F - NEUROPIL_COEFF * Fneu)[keep])
        kept += [f"{plane.name}:{i}" for i in np.flatnonzero(keep)]
        positions.append(_centroids(plane, len(F), z)[keep])
    T = min(x.shape[1] for x in fc)
    if any(x.shape[1] != T for x in fc):
        log.warning("%s: planes differ in length; keeping the first %d frames", folder, T)
    rate = frame_rate_hz or _frame_rate(planes[0])
    if not rate:
        raise RecordingError(f"{planes[0]}: no frame rate (fs) in ops.npy/settings.npy; pass "
                             "frame_rate_hz")
    from rig.readers.dff import dff_offline

    traces = dff_offline(np.concatenate([x[:, :T] for x in fc]).T, rate)
    t_ns = np.round(np.arange(T) * 1e9 / rate).astype(np.int64)
    session = Session(traces=traces, t_ns=t_ns, frame_rate_hz=float(rate),
                      tail=np.zeros((T, 0), dtype=np.float32),
                      positions=np.concatenate(positions).astype(np.float32),
                      meta={"source": str(folder), "imported_from": "suite2p",
                            "roi_ids": kept, "positions_unit": "pixels (x, y), plane (z)",
                            "neuropil_coeff": NEUROPIL_COEFF})
    behaviour = behaviour or next((folder / n for n in ("behaviour.csv", "behaviour.npy",
                                                        "tail.csv", "tail.npy")
                                   if (folder / n).is_file()), None)
    if behaviour is not None:
        t_s, angles = read_behaviour(Path(behaviour))
        attach_behaviour(session, t_s, angles)
    return session


def _centroids(plane: Path, n: int, z: int) -> np.ndarray:
    out = np.full((n, 3), np.nan, dtype=np.float32)
    out[:, 2] = z
    if not (plane / "stat.npy").is_file():
        return out
    stat = load_npy(plane / "stat.npy")
    if len(stat) != n:
        raise RecordingError(f"{plane / 'stat.npy'}: {len(stat)} ROIs, F.npy has {n}")
    for i, roi in enumerate(stat):
        if "med" in roi:
            out[i, :2] = roi["med"][1], roi["med"][0]  # med is (y, x)
        elif "ypix" in roi:
            out[i, :2] = np.mean(roi["xpix"]), np.mean(roi["ypix"])
        out[i, 2] = roi.get("iplane", z)
    return out


# -- behaviour ----------------------------------------------------------------------------
def read_behaviour(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(t_s (n,), angles (n, S)) from a tail file; see the module docstring for the layout."""
    if not path.is_file():
        raise RecordingError(f"{path}: behaviour file missing")
    if path.suffix == ".csv":
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise RecordingError(f"{path}: cannot read the behaviour file ({exc})") from None
        if len(rows) < 2:
            raise RecordingError(f"{path}: needs a header row and at least one sample")
        header = [h.strip().lower() for h in rows[0]]
        time_col = next((header.index(c) for c in _TIME_COLUMNS if c in header), None)
        if time_col is None:
            raise RecordingError(f"{path}: no time column; name one of {_TIME_COLUMNS} "
                                 "(seconds from the first imaging frame)")
        try:
            data = np.array([[float(x) for x in row] for row in rows[1:] if row], dtype=float)
        except ValueError as exc:
            raise RecordingError(f"{path}: non-numeric value ({exc})") from None
        t_s = data[:, time_col]
        angles = np.delete(data, time_col, axis=1)
    elif path.suffix == ".npy":
        data = load_npy(path)
        times = path.with_name(path.stem + "_t.npy")  # suite2p-style tail.npy + tail_t.npy
        if times.is_file() and not data.dtype.names:
            t_s = np.asarray(load_npy(times), float).ravel()
            angles = data.reshape(len(data), int(np.prod(data.shape[1:]))).astype(float)
            if len(t_s) != len(angles):
                raise RecordingError(f"{times}: {len(t_s)} times for {len(angles)} samples in "
                                     f"{path.name}; give one time (s) per row")
        elif data.dtype.names:
            name = next((n for n in data.dtype.names if n.lower() in _TIME_COLUMNS), None)
            if name is None:
                raise RecordingError(f"{path}: no time field; name one of {_TIME_COLUMNS}")
            t_s = data[name].astype(float)
            angles = np.stack([data[n].astype(float) for n in data.dtype.names if n != name], 1)
        elif data.ndim == 2 and data.shape[1] >= 2:
            t_s, angles = data[:, 0].astype(float), data[:, 1:].astype(float)
        else:
            raise RecordingError(f"{path}: shape {data.shape}; expected (samples, 1 + segments) "
                                 "with time (s) in the first column")
    else:
        raise RecordingError(f"{path}: behaviour must be .csv or .npy")
    if np.any(np.diff(t_s) < 0):
        raise RecordingError(f"{path}: timestamps go backwards; sort the samples by time, or "
                             f"put the times (s) in {path.stem}_t.npy beside a (samples, "
                             "segments) array without a time column")
    return t_s, angles.astype(np.float32)


def attach_behaviour(session: Session, t_s: np.ndarray, angles: np.ndarray,
                     origin_ns: int | None = None) -> None:
    """Keep camera-rate angles and set ``tail`` to their mean over each imaging frame.

    ``t_s`` counts seconds from ``origin_ns`` (default: the first imaging frame)."""
    t0 = int(session.t_ns[0]) if origin_ns is None else int(origin_ns)
    cam_ns = t0 + np.round(np.asarray(t_s) * 1e9).astype(np.int64)
    session.camera_t_ns, session.camera_tail = cam_ns, angles.astype(np.float32)
    session.tail = frame_means(session.t_ns, cam_ns, angles)


def frame_means(frame_ns: np.ndarray, sample_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of samples over each frame's interval [t_i, t_i+1) -> (T, S); NaN where none."""
    T, S = len(frame_ns), values.shape[1]
    if T == 0:
        return np.zeros((0, S), dtype=np.float32)
    step = np.median(np.diff(frame_ns)) if T > 1 else 1
    edges = np.append(frame_ns, frame_ns[-1] + step)
    bins = np.searchsorted(edges, sample_ns, side="right") - 1
    ok = (bins >= 0) & (bins < T)
    sums = np.zeros((T, S))
    np.add.at(sums, bins[ok], values[ok])
    counts = np.bincount(bins[ok], minlength=T)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(np.float32)


# -- NWB ----------------------------------------------------------------------------------
def read_nwb(path: Path) -> Session:
    """A Session from an NWB file's ophys traces and behaviour TimeSeries (via pynwb)."""
    from pynwb import NWBHDF5IO, TimeSeries
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    path = Path(path)
    try:
        io = NWBHDF5IO(str(path), "r")
        nwb = io.read()
    except Exception as exc:  # h5py/hdmf raise many types for a damaged file: name it once
        raise RecordingError(f"{path}: not a readable NWB file ({type(exc).__name__}: "
                             f"{exc})") from None
    with io:
        parts = _roi_series(nwb, DfOverF, Fluorescence, RoiResponseSeries)
        if not parts:
            raise RecordingError(f"{path}: no RoiResponseSeries in processing/ophys "
                                 "(DfOverF or Fluorescence)")
        series = parts[0]
        data = np.hstack([_2d(part.data[:]) for part in parts])
        t_s = _times(series, len(data))
        plane_rate = getattr(series.rois.table.imaging_plane, "imaging_rate", None)
        rate = float(series.rate or plane_rate or 1 / np.median(np.diff(t_s)))
        if not isinstance(series.parent, DfOverF):  # raw fluorescence: make it ΔF/F
            from rig.readers.dff import dff_offline

            data = dff_offline(data, rate)
        t0 = int(nwb.session_start_time.timestamp() * 1e9)
        t_ns = t0 + np.round(t_s * 1e9).astype(np.int64)
        session = Session(traces=data, t_ns=t_ns, frame_rate_hz=rate,
                          tail=np.zeros((len(data), 0), dtype=np.float32),
                          positions=_positions(parts),
                          meta={"source": str(path), "imported_from": "nwb",
                                "series": series.name, "identifier": nwb.identifier,
                                "session_description": nwb.session_description})
        per_frame, camera = _behaviour_series(nwb, TimeSeries, RoiResponseSeries, t_s)
        if camera is not None:
            angles = _2d(camera.data[:])
            attach_behaviour(session, _times(camera, len(angles)), angles, origin_ns=t0)
            session.meta["behaviour_series"] = camera.name
        if per_frame is not None:
            session.tail = _2d(per_frame.data[:])
            session.meta["tail_series"] = per_frame.name
        _read_stimulations(nwb, session, t_s)
    return session


def _read_stimulations(nwb, session: Session, frame_s: np.ndarray) -> None:
    """``stimulations`` intervals (as ``rig export`` writes them): frame and targets."""
    table = (nwb.intervals or {}).get("stimulations")
    if table is None or "targets" not in table.colnames or not len(table):
        return
    targets = [np.asarray(row, dtype=np.int32) for row in table["targets"][:]]
    if "frame" in table.colnames:
        frames = np.asarray(table["frame"][:], dtype=np.int64)
    else:  # the frame nearest each start
        frames = np.abs(np.asarray(table["start_time"][:])[:, None] - frame_s).argmin(axis=1)
    padded = np.full((len(targets), max(map(len, targets), default=0)), -1, dtype=np.int32)
    for m, row in enumerate(targets):
        padded[m, :len(row)] = row
    session.stim_frame, session.stim_targets = frames, padded


def _roi_series(nwb, DfOverF, Fluorescence, RoiResponseSeries) -> list:
    """The traces' series: the first of DfOverF (else Fluorescence), or all its parts in
    order when ``rig export`` split it (``dff_part0``, ``dff_part1``...)."""
    ophys = nwb.processing.get("ophys")
    if ophys is None:
        return []
    found = {}
    for container in ophys.data_interfaces.values():
        for kind in (DfOverF, Fluorescence):
            if isinstance(container, kind) and container.roi_response_series:
                found.setdefault(kind, container.roi_response_series)
    series = found.get(DfOverF) or found.get(Fluorescence) or {}
    parts = {int(m.group(1)): s for name, s in series.items()
             if (m := re.fullmatch(r"dff_part(\d+)", name))}
    if parts and len(parts) == len(series):
        return [parts[k] for k in sorted(parts)]
    return list(series.values())[:1]


def _behaviour_series(nwb, TimeSeries, RoiResponseSeries, frame_s: np.ndarray):
    """(per-frame tail series or None, camera-rate tail series or None)."""
    candidates = []
    for module in (nwb.processing.get("behavior"), nwb.processing.get("behaviour")):
        if module is not None:
            for container in module.data_interfaces.values():
                if isinstance(container, TimeSeries):
                    candidates.append(container)
                elif hasattr(container, "time_series"):
                    candidates += list(container.time_series.values())
    candidates += [s for s in nwb.acquisition.values()
                   if type(s) is TimeSeries and not isinstance(s, RoiResponseSeries)]
    candidates = [s for s in candidates if np.ndim(s.data) in (1, 2)
                  and np.issubdtype(np.asarray(s.data[:1]).dtype, np.floating)]
    tail = [s for s in candidates if "tail" in s.name.lower()] or candidates
    per_frame = camera = None
    for s in tail:
        t = _times(s, len(s.data))
        if per_frame is None and len(t) == len(frame_s) and np.allclose(t, frame_s, atol=1e-4):
            per_frame = s
        elif len(t) > len(frame_s) and (camera is None or len(t) > len(camera.data)):
            camera = s
    if per_frame is None and camera is None and tail:
        camera = tail[0]  # a slower or irregular series: average it per frame all the same
    return per_frame, camera


def _2d(data) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    return data[:, None] if data.ndim == 1 else data


def _times(series, n: int) -> np.ndarray:
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=float)
    return float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)


def _positions(parts: list) -> np.ndarray | None:
    found = [_nwb_positions(part, _2d(part.data[:1]).shape[1]) for part in parts]
    return None if any(p is None for p in found) else np.vstack(found)


def _nwb_positions(series, n: int) -> np.ndarray | None:
    table = series.rois.table
    rows = [int(r) for r in series.rois.data[:]]
    if "centroid_um" in table.colnames:  # written by `rig export`
        return np.asarray(table["centroid_um"][:], dtype=np.float32)[rows]
    out = np.full((n, 3), np.nan, dtype=np.float32)
    for col, dims in (("voxel_mask", 3), ("pixel_mask", 2)):
        if col in table.colnames:
            for i, row in enumerate(rows):
                mask = np.array([tuple(v)[:dims] for v in table[col][row]], dtype=float)
                out[i, :dims] = mask.mean(axis=0)
            if dims == 2:
                out[:, 2] = 0
            return out
    return None
