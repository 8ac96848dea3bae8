"""``rig track VIDEO``: a stack or video file in; per-frame angles, bouts and a contact sheet
out; a clear one-line error for a file it cannot read."""
import csv
import importlib.util
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.cli import main
from sims.camera import CameraRenderer, fish_tail

FPS = 200.0
N_SEG = 8
BASE, TIP = (20.0, 48.0), (100.0, 48.0)


@pytest.fixture(scope="module")
def movie():
    """3 s of the simulated fish's tail (with bouts) rendered at 96 x 128, and its truth."""
    angles, _, bouts = fish_tail(3.0, FPS, N_SEG, seed=4, spont_bout_hz=1.5)
    assert len(bouts) >= 2, "the seed must give bouts to find"
    renderer = CameraRenderer((96, 128), N_SEG, seed=1, direction=0.0, base=BASE, length=80)
    frames = np.array([renderer.render(a).copy() for a in angles])  # render reuses a buffer
    return frames, angles, bouts


def _run(*argv):
    return main(["track", *map(str, argv), "--no-progress"])


def _read_png(path):
    """(h, w) of a PNG, after checking that its pixels decompress to the stated size."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    n = struct.unpack(">I", data[idat - 4:idat])[0]
    assert len(zlib.decompress(data[idat + 4:idat + 4 + n])) == h * (1 + 3 * w)
    return h, w


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _save(kind, frames, path):
    if kind == "h5":
        import h5py

        with h5py.File(path, "w") as f:
            f["video"] = frames
    elif kind == "tif":
        import tifffile

        tifffile.imwrite(path, frames, photometric="minisblack")
    else:
        np.save(path, frames)


@pytest.mark.parametrize("kind", ["h5", "tif", "npy"])
def test_track_a_stack_writes_angles_bouts_and_a_contact_sheet(movie, tmp_path, kind, capsys):
    frames, angles, bouts = movie
    path = tmp_path / f"fish.{kind}"
    _save(kind, frames, path)
    out = tmp_path / "out"
    assert _run(path, "--base", *BASE, "--tip", *TIP, "--fps", FPS, "--segments", N_SEG,
                "--out", out) == 0
    assert f"tracked {len(frames)} frames at 200 Hz" in capsys.readouterr().out
    rows = _rows(out / "tail.csv")
    assert len(rows) == len(frames) and rows[1]["t_s"] == "0.005000"
    assert not any(r["lost"] == "1" for r in rows)
    tracked = np.radians([[float(r[f"angle_{i}_deg"]) for i in range(N_SEG)] for r in rows])
    rms = math.degrees(float(np.sqrt(np.mean((tracked - angles) ** 2))))
    assert rms < 2.0, rms  # 1.1 deg measured; 10 px segments are coarser than the 256 px sim's
    found = _rows(out / "bouts.csv")
    assert len(found) == len(bouts)
    for row, (s, e) in zip(found, bouts):
        assert int(row["start_frame"]) < e and s < int(row["end_frame"])  # overlaps the truth
    h, w = _read_png(out / "contact_sheet.png")
    assert h > 96 and w > 6 * 128


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None,
                    reason="OpenCV is not installed: pip install opencv-python-headless")
def test_track_an_avi_video_takes_its_frame_rate_from_the_file(movie, tmp_path, capsys):
    import cv2

    frames = movie[0][:200]
    path = tmp_path / "fish.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (128, 96), False)
    for f in frames:
        writer.write(f)
    writer.release()
    out = tmp_path / "out"
    assert _run(path, "--base", *BASE, "--tip", *TIP, "--segments", N_SEG, "--out", out) == 0
    assert "tracked 200 frames at 200 Hz" in capsys.readouterr().out
    rows = _rows(out / "tail.csv")
    tracked = np.array([float(r["cum_angle_deg"]) for r in rows])
    truth = np.degrees(movie[1][:200, -1])
    assert np.corrcoef(tracked, truth)[0, 1] > 0.95  # through JPEG compression


def test_without_the_two_clicks_it_writes_the_first_frame_to_pick_them_on(movie, tmp_path,
                                                                          capsys):
    path = tmp_path / "fish.npy"
    np.save(path, movie[0][:3])
    assert _run(path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rig track: give --base X Y and --tip X Y") and "\n" not in err
    assert _read_png(tmp_path / "out" / "first_frame.png")[1] >= 600


@pytest.mark.parametrize("name, content, extra, words", [
    ("nope.h5", None, ["--fps", "200"], "does not exist"),
    ("bad.h5", b"garbage", ["--fps", "200"], "not a readable HDF5 file"),
    ("bad.tif", b"garbage", ["--fps", "200"], "not a readable TIFF"),
    ("bad.avi", b"garbage", [], "could not open"),
    ("fish.npy", "stack", [], "give --fps HZ"),
    ("fish.npy", "stack", ["--fps", "200", "--base", "500", "48"], "outside a 128x96 frame"),
    ("notes.txt", b"hello", [], "unknown kind of file"),
])
def test_a_file_it_cannot_track_is_one_line_naming_the_fix(movie, tmp_path, capsys, name,
                                                           content, extra, words):
    path = tmp_path / name
    if content == "stack":
        np.save(path, movie[0][:3])
    elif content is not None:
        path.write_bytes(content)
    if "--base" not in extra:
        extra = [*extra, "--base", *BASE]
    assert _run(path, *extra, "--tip", *TIP, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rig track: ") and "\n" not in err and words in err, err


def test_an_output_folder_that_cannot_be_made_is_one_line(movie, tmp_path, capsys):
    path = tmp_path / "fish.npy"
    np.save(path, movie[0][:3])
    (tmp_path / "taken").write_text("a file, not a folder")
    for extra in ([], ["--base", *BASE, "--tip", *TIP]):
        assert _run(path, "--fps", FPS, *extra, "--out", tmp_path / "taken") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rig track: cannot write to") and "\n" not in err, err


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".h5", ".tif", ".npy", ".avi"]))
def test_arbitrary_bytes_never_end_in_a_traceback(tmp_path, capsys, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    rc = _run(path, "--base", *BASE, "--tip", *TIP, "--fps", FPS, "--out", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("rig track: ") and "\n" not in err, err
