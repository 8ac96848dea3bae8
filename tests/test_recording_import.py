"""Sessions recorded elsewhere: suite2p folders and NWB files written here in their own layouts."""
from datetime import datetime, timezone

import numpy as np
import pytest

from rig.readers.dff import dff_offline
from rig.recording import RecordingError, read_session
from rig.recording.export import export_nwb
from rig.recording.importers import load_npy, read_suite2p
from rig.recording.replay import open_messages

pytestmark = pytest.mark.timeout(60)

T, N_ROIS, FS = 120, 6, 10.0
ISCELL = np.array([1, 1, 0, 1, 0, 1])


def write_suite2p(root, version="0.x"):
    """An output folder as suite2p writes it: suite2p/plane0/{F,Fneu,iscell,stat,ops}.npy."""
    rng = np.random.default_rng(1)
    plane = root / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    F = (200 + 20 * rng.standard_normal((N_ROIS, T))).astype(np.float32)
    Fneu = (50 + 5 * rng.standard_normal((N_ROIS, T))).astype(np.float32)
    np.save(plane / "F.npy", F)
    np.save(plane / "Fneu.npy", Fneu)
    np.save(plane / "spks.npy", np.zeros_like(F))
    np.save(plane / "iscell.npy", np.stack([ISCELL, rng.random(N_ROIS)], 1))
    stat = np.array([{"ypix": np.array([10 + i, 11 + i]), "xpix": np.array([20, 21]),
                      "lam": np.array([0.5, 0.5], np.float32), "med": [10 + i, 20 + 2 * i],
                      "npix": 2, "iplane": 0} for i in range(N_ROIS)], dtype=object)
    np.save(plane / "stat.npy", stat, allow_pickle=True)
    if version == "0.x":
        np.save(plane / "ops.npy", {"fs": FS, "nplanes": 1, "save_path": str(plane)},
                allow_pickle=True)
    else:  # suite2p 1.x: settings.npy / db.npy replace ops.npy
        np.save(plane / "settings.npy", {"fs": FS, "tau": 1.0}, allow_pickle=True)
        np.save(plane / "db.npy", {"nplanes": 1, "data_path": [str(root)]}, allow_pickle=True)
    return F, Fneu


def write_tail_csv(path, S=3):
    t = np.arange(0, T / FS, 1 / 100)  # a 100 Hz camera, seconds from the first frame
    angles = np.stack([np.sin(t * (k + 1)) for k in range(S)], 1)
    rows = ["time_s," + ",".join(f"seg{k}" for k in range(S))]
    rows += [",".join(f"{v:.6f}" for v in (ti, *a)) for ti, a in zip(t, angles)]
    path.write_text("\n".join(rows) + "\n")
    return t, angles


@pytest.mark.parametrize("version", ["0.x", "1.x"])
def test_a_suite2p_folder_imports_cells_with_neuropil_corrected_dff(tmp_path, version):
    F, Fneu = write_suite2p(tmp_path, version)
    t, angles = write_tail_csv(tmp_path / "behaviour.csv")
    s = read_session(tmp_path)
    cells = ISCELL == 1
    assert s.traces.shape == (T, cells.sum()) and s.frame_rate_hz == FS
    np.testing.assert_allclose(s.traces, dff_offline((F - 0.7 * Fneu)[cells].T, FS), rtol=1e-6)
    np.testing.assert_array_equal(s.t_ns[:3], [0, 100_000_000, 200_000_000])
    # positions from stat["med"] (y, x) -> (x, y, plane)
    np.testing.assert_array_equal(s.positions[0], [20, 10, 0])
    # camera-rate tail kept, and averaged over each 100 ms imaging frame
    assert s.camera_tail.shape == angles.shape and s.tail.shape == (T, 3)
    np.testing.assert_allclose(s.tail[0], angles[:10].mean(0), atol=1e-5)


def test_a_plane_folder_imports_directly(tmp_path):
    write_suite2p(tmp_path)
    s = read_suite2p(tmp_path / "suite2p" / "plane0", only_cells=False)
    assert s.n_neurons == N_ROIS and s.tail.shape == (T, 0)


def test_a_missing_suite2p_file_is_named(tmp_path):
    write_suite2p(tmp_path)
    (tmp_path / "suite2p" / "plane0" / "Fneu.npy").unlink()
    with pytest.raises(RecordingError, match=r"plane0/Fneu\.npy: missing"):
        read_session(tmp_path)


def test_a_folder_that_is_not_suite2p_is_refused(tmp_path):
    with pytest.raises(RecordingError, match="not a suite2p output folder"):
        read_session(tmp_path)


class Boom:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_stat_file_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "stat.npy"
    np.save(path, np.array([{"med": [1, 2]}, Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(RecordingError, match=r"stat\.npy: .*refused to build builtins\.print"):
        load_npy(path)


def test_a_behaviour_file_without_time_column_is_refused(tmp_path):
    write_suite2p(tmp_path)
    (tmp_path / "behaviour.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RecordingError, match=r"behaviour\.csv: no time column"):
        read_session(tmp_path)


def write_nwb(path, kind="Fluorescence"):
    """An NWB file as a lab writes it with pynwb: ophys traces + a behaviour TimeSeries."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel

    nwb = NWBFile(session_description="test fish", identifier="fish-1",
                  session_start_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    device = nwb.create_device(name="2p")
    plane = nwb.create_imaging_plane(
        name="plane0", optical_channel=OpticalChannel(name="green", description="gcamp",
                                                      emission_lambda=520.0),
        device=device, description="tectum", imaging_rate=FS, excitation_lambda=920.0,
        indicator="GCaMP6s", location="optic tectum")
    ophys = nwb.create_processing_module("ophys", "processed")
    seg = ImageSegmentation()
    ophys.add(seg)
    ps = seg.create_plane_segmentation(name="rois", description="cells", imaging_plane=plane)
    for i in range(N_ROIS):
        ps.add_roi(pixel_mask=[(2 * i, 3, 1.0), (2 * i + 2, 5, 1.0)])
    region = ps.create_roi_table_region("all", region=list(range(N_ROIS)))
    rng = np.random.default_rng(2)
    data = (100 + rng.standard_normal((T, N_ROIS))).astype(np.float32)
    container = Fluorescence() if kind == "Fluorescence" else DfOverF()
    ophys.add(container)
    container.create_roi_response_series(name="traces", data=data, rois=region, unit="a.u.",
                                         rate=FS, starting_time=0.0)
    behavior = nwb.create_processing_module("behavior", "tail")
    bts = BehavioralTimeSeries()
    behavior.add(bts)
    cam_t = np.arange(0, T / FS, 0.005)
    angles = np.stack([np.cos(cam_t), np.sin(cam_t)], 1)
    bts.add_timeseries(TimeSeries(name="tail_angles", data=angles, unit="radians",
                                  timestamps=cam_t))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return data, cam_t, angles


@pytest.mark.parametrize("kind", ["Fluorescence", "DfOverF"])
def test_an_nwb_file_imports_traces_and_tail(tmp_path, kind):
    data, cam_t, angles = write_nwb(tmp_path / "fish.nwb", kind)
    s = read_session(tmp_path / "fish.nwb")
    expected = data if kind == "DfOverF" else dff_offline(data, FS)
    np.testing.assert_allclose(s.traces, expected, rtol=1e-6)
    assert s.frame_rate_hz == FS and s.n_frames == T
    start = int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp() * 1e9)
    assert s.t_ns[0] == start and s.t_ns[1] - s.t_ns[0] == 100_000_000
    np.testing.assert_allclose(s.tail[0], angles[:20].mean(0), atol=1e-5)
    np.testing.assert_allclose(s.positions[0], [1, 4, 0])  # pixel-mask centroid (x, y)


def test_a_damaged_nwb_file_is_named(tmp_path):
    (tmp_path / "bad.nwb").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(RecordingError, match=r"bad\.nwb: not a readable NWB file"):
        read_session(tmp_path / "bad.nwb")


def test_export_writes_nwb_that_reads_back_the_same(tmp_path):
    write_suite2p(tmp_path)
    write_tail_csv(tmp_path / "behaviour.csv")
    s = read_session(tmp_path)
    out = export_nwb(s, tmp_path / "out.nwb")
    back = read_session(out)
    np.testing.assert_array_equal(back.traces, s.traces)
    np.testing.assert_array_equal(back.tail, s.tail)
    np.testing.assert_array_equal(back.camera_tail, s.camera_tail)
    with pytest.raises(RecordingError, match="exists; pass --overwrite"):
        export_nwb(s, out)


def test_replay_takes_imported_sessions_directly(tmp_path):
    write_suite2p(tmp_path)
    messages = list(open_messages(tmp_path))
    topics = [topic for topic, _ in messages]
    assert topics.count("traces") == T


def test_export_has_no_critical_nwbinspector_findings(tmp_path):
    pytest.importorskip("nwbinspector")
    write_suite2p(tmp_path)
    session = read_session(tmp_path)
    session.meta.update(subject_id="fish1", age="P6D")  # rig export --subject-id --age
    out = export_nwb(session, tmp_path / "out.nwb")
    import nwbinspector as inspector
    findings = list(inspector.inspect_nwbfile(nwbfile_path=str(out)))
    critical = [f for f in findings
                if f.importance.name in ("CRITICAL", "PYNWB_VALIDATION", "ERROR")]
    assert not critical, critical
