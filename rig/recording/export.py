"""``rig export SESSION --nwb OUT.nwb``: a session as an NWB file that pynwb reads back.

Layout: ``processing/ophys/DfOverF/dff`` (RoiResponseSeries, frames x neurons, seconds from
``session_start_time`` = the first frame's time) over a ``PlaneSegmentation`` whose ROIs are
one voxel at each neuron's position (µm, x y z) when positions are known (split into
``dff_part0``... when there are fewer frames than neurons: see ``dff_parts``); tail angles
per frame (and at camera rate when present) and the visual stimulus code per frame as
TimeSeries in ``processing/behavior``; the stimulations as the intervals table
``stimulations`` (frame, targets). Rig's session ``meta`` goes into ``notes`` as JSON. A
simulated clock (frames from 0 s) gets the recording's creation time as its start, and an
unknown age the open range ``P0D/``, so nwbinspector finds nothing critical. The file is validated with pynwb before it replaces
OUT (a failed export leaves any earlier file whole).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rig.recording.format import RecordingError
from rig.session import Session

_YEAR_1980_NS = 315_532_800 * 10**9  # earlier: a clock that is not a date (nwbinspector too)


def export_nwb(session: Session, out: Path, overwrite: bool = False) -> Path:
    """Write ``session`` to ``out`` (.nwb); returns the path. Raises RecordingError if the
    written file does not validate."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries, validate
    from pynwb.file import Subject
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.ophys import DfOverF, ImageSegmentation, OpticalChannel

    out = Path(out)
    if out.suffix != ".nwb":
        raise RecordingError(f"{out}: an NWB file must end in .nwb")
    if out.exists() and not overwrite:
        raise RecordingError(f"{out}: exists; pass --overwrite to replace it")
    T, N = session.traces.shape
    t0 = int(session.t_ns[0]) if T else 0
    times = (np.asarray(session.t_ns, dtype=np.int64) - t0) / 1e9
    meta = dict(session.meta)
    start_ns = t0
    if t0 < _YEAR_1980_NS:  # a simulated clock that starts at 0 s: not a date
        start_ns = int(meta.get("created_ns") or time.time_ns())
        meta["session_start_time"] = "when the recording was written (its clock is simulated)"
    age = meta.get("age")
    if not age:  # NWB wants an ISO 8601 age; unknown is "at least 0 days", said in notes
        age = "P0D/"
        meta["age"] = "unknown (pass rig export --age P6D)"
    nwb = NWBFile(
        session_description=str(meta.get("session_description",
                                          "Rig session (closed-loop zebrafish imaging)")),
        identifier=str(meta.get("identifier", uuid.uuid4())),
        session_start_time=datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc),
        notes=json.dumps(meta, default=str)[:100_000],
        source_script="rig export", source_script_file_name="rig/recording/export.py",
        # Rig records larval zebrafish; what the session does not say stays "unknown".
        subject=Subject(subject_id=str(session.meta.get("subject_id", "unknown")),
                        species=str(session.meta.get("species", "Danio rerio")),
                        sex=str(session.meta.get("sex", "U")), age=str(age)))
    device = nwb.create_device(name="microscope", description="imaging system of the rig")
    channel = OpticalChannel(name="green", description="calcium indicator channel",
                             emission_lambda=float(session.meta.get("emission_nm", 520.0)))
    plane = nwb.create_imaging_plane(
        name="volume", optical_channel=channel, device=device,
        description="whole-brain volume", imaging_rate=float(session.frame_rate_hz),
        grid_spacing=[1e-6, 1e-6, 1e-6], grid_spacing_unit="meters",
        excitation_lambda=float(session.meta.get("excitation_nm", 920.0)),
        indicator=str(session.meta.get("indicator", "unknown")),
        location=str(session.meta.get("location", "whole brain")))
    ophys = nwb.create_processing_module("ophys", "ΔF/F of every neuron, from Rig")
    segmentation = ImageSegmentation()
    ophys.add(segmentation)
    rois = segmentation.create_plane_segmentation(
        name="neurons", description="one ROI per neuron; voxel at its centroid when known",
        imaging_plane=plane)
    positions = session.positions
    if positions is not None and np.all(np.isfinite(positions)):
        # voxel_mask holds unsigned voxel indices (1 µm grid here); exact µm in a column
        for x, y, z in np.clip(np.round(np.asarray(positions, dtype=float)), 0, None):
            rois.add_roi(voxel_mask=[(int(x), int(y), int(z), 1.0)])
        rois.add_column("centroid_um", "neuron centroid (x, y, z) in µm",
                        data=np.asarray(positions, dtype=np.float32))
    else:
        for i in range(N):  # no anatomy known: a placeholder mask, said so in the description
            rois.add_roi(voxel_mask=[(float(i), 0.0, 0.0, 1.0)])
        rois.fields["description"] += " (positions unknown: voxel x = ROI index)"
    if session.regions is not None and session.region_names:
        names = list(session.region_names)
        rois.add_column("region", "brain region of the neuron",
                        data=[names[r] if 0 <= r < len(names) else "" for r in session.regions])
    dff = DfOverF()
    ophys.add(dff)
    traces = np.asarray(session.traces, np.float32)
    for name, first, last in dff_parts(T, N):
        region = rois.create_roi_table_region(f"neurons {first} to {last - 1}",
                                              region=list(range(first, last)))
        dff.create_roi_response_series(name=name, data=traces[:, first:last], rois=region,
                                       unit="n.a.", timestamps=times,
                                       description="ΔF/F per imaging frame")
    series = BehavioralTimeSeries(name="tail")
    if session.tail.shape[1]:
        series.add_timeseries(TimeSeries(name="tail_angles", data=session.tail, unit="radians",
                                         timestamps=times,
                                         description="mean tail segment angles per frame"))
    if session.camera_t_ns is not None and session.camera_tail is not None:
        series.add_timeseries(TimeSeries(
            name="camera_tail_angles", data=session.camera_tail, unit="radians",
            timestamps=(np.asarray(session.camera_t_ns, dtype=np.int64) - t0) / 1e9,
            description="tail segment angles at camera rate"))
    if session.stimulus is not None:
        series.add_timeseries(TimeSeries(
            name="stimulus_code", data=np.asarray(session.stimulus, dtype=np.int8), unit="n.a.",
            timestamps=times, description="visual stimulus per frame; names: "
                                          + json.dumps(list(session.stimulus_names))))
    if session.stim_frame is not None and len(session.stim_frame):
        _add_stimulations(nwb, session, times)
    if series.time_series:  # an empty container does not validate: leave it out
        nwb.create_processing_module("behavior", "tail and stimuli").add(series)
    partial = out.with_name(f".{out.stem}.{os.getpid()}.partial.nwb")
    try:
        with NWBHDF5IO(str(partial), "w") as io:
            io.write(nwb)
        errors = validate(path=str(partial))
        if errors:
            raise RecordingError(f"{out}: the written NWB file does not validate: "
                                 + "; ".join(str(e) for e in errors[:5]))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def dff_parts(T: int, N: int) -> list[tuple[str, int, int]]:
    """(series name, first neuron, end) of the ΔF/F series of T frames x N neurons.

    NWB puts time first, and nwbinspector calls a series with more columns than rows
    mis-oriented (CRITICAL): a short session of many neurons is split into parts of at most T
    neurons, ``dff_part0``, ``dff_part1``..., which ``read_nwb`` joins again."""
    if N <= T:
        return [("dff", 0, N)]
    width = max(T, 1)
    return [(f"dff_part{k}", a, min(a + width, N)) for k, a in enumerate(range(0, N, width))]


def _add_stimulations(nwb, session: Session, times: np.ndarray) -> None:
    """The stimulations as an intervals table: one row each, its frame and its targets (a
    ragged column), so that any number of targets is stored as it was."""
    stims = nwb.create_time_intervals("stimulations", "holographic stimulations: the imaging "
                                                      "frame and the neurons targeted")
    stims.add_column("frame", "imaging frame (row of the ΔF/F series) of the stimulation")
    stims.add_column("targets", "neurons stimulated (rows of the ROI table)", index=True)
    period = 1 / session.frame_rate_hz if session.frame_rate_hz else 0.0
    for frame, row in zip(np.asarray(session.stim_frame, dtype=np.int64), session.stim_targets):
        start = float(times[frame])
        stims.add_row(start_time=start, stop_time=start + period, frame=int(frame),
                      targets=[int(t) for t in row if t >= 0])
