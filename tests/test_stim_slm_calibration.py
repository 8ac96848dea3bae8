"""The calibration file and ``rig calibrate slm``'s refusals (no optics needed)."""
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig import cli
from stim.calibration import CalibrationError, Measurement, fit_affine, load, pattern, save
from stim.hologram import Calibration

MATRIX = np.array([[0.4, 0.1, 0.02, -4.0], [0.12, -0.39, 0.0, 6.0]])


def saved(tmp_path, shape=(64, 64)):
    m = Measurement(Calibration(MATRIX, shape), np.zeros((4, 2)), np.zeros((4, 2)), 1.2,
                    np.full(4, 0.05))
    return save(tmp_path / "cal.json", m)


def test_calibration_file_round_trip_and_inverse(tmp_path):
    cal = load(saved(tmp_path), (64, 64))
    np.testing.assert_array_equal(cal.matrix, MATRIX)
    xyz = np.array([[40.0, 20, 5], [-30, 40, 0], [60, -5, 12]])
    np.testing.assert_allclose(cal.to_imaging(cal.to_slm(xyz), xyz[:, 2]), xyz[:, :2])


def test_affine_fit_recovers_a_known_map_from_noisy_points():
    rng = np.random.default_rng(0)
    truth = np.array([[0.6, -0.2, 30.0], [0.25, 0.55, -12.0]])
    src = rng.uniform(0, 300, (16, 2))
    dst = np.c_[src, np.ones(16)] @ truth.T + rng.normal(0, 0.01, (16, 2))
    np.testing.assert_allclose(fit_affine(src, dst), truth, atol=0.01)
    with pytest.raises(CalibrationError, match="need 3 not on one line"):
        fit_affine(np.array([[0.0, 0], [1, 1], [2, 2]]), np.zeros((3, 2)))


def test_the_pattern_stays_clear_of_the_zero_order():
    uv = pattern((64, 64), grid=3, extent=0.5)
    assert len(uv) == 8 and np.hypot(*uv.T).min() >= 5  # the centre point is left out


@pytest.mark.parametrize("content, message", [
    (None, r"no such file; make it with `rig calibrate slm"),
    ("{not json", r"not JSON"),
    ('{"kind": "something else"}', r"not a Rig SLM calibration"),
    ('{"kind": "rig.slm_calibration", "version": 9}', r"version 9; this Rig reads 1"),
    ('{"kind": "rig.slm_calibration", "slm_shape": [64, 64], "matrix_um_to_slm": [[1, 2]]}',
     r"expected \(2, 4\)"),
])
def test_a_bad_calibration_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "cal.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibrationError, match=message):
        load(path)


def test_a_calibration_from_another_slm_is_refused(tmp_path):
    with pytest.raises(CalibrationError, match="measured on a 64 x 64 SLM, this one is 128 x "
                                               "128: calibrate this SLM"):
        load(saved(tmp_path), (128, 128))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kind", "version", "slm_shape", "matrix_um_to_slm", "zero_order_px"]),
        inner, max_size=5), max_leaves=20).map(
            lambda doc: json.dumps({"kind": "rig.slm_calibration", **doc}
                                   if isinstance(doc, dict) else doc).encode()))
def test_any_calibration_file_loads_or_fails_with_calibration_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cal") / "cal.json"
    path.write_bytes(data)
    try:
        cal = load(path)
    except CalibrationError:
        return
    assert cal.matrix.shape == (2, 4) and np.isfinite(cal.matrix).all()


def write_config(tmp_path, slm="", microscope=""):
    path = tmp_path / "rig.toml"
    path.write_text(f'[nodes.slm]\nclass = "stim.slm_node:SLM"\n{slm}\n' + (
        f'[nodes.microscope]\nclass = "rig.readers.node:Microscope"\n{microscope}\n'
        if microscope else ""))
    return str(path)


@pytest.mark.parametrize("slm, microscope, flags, message", [
    ("", "", [], r"--um-per-px: give the imaging pixel size"),
    ("", 'um_per_px = 1.5', [], r"\[nodes.slm\] calibration_file: not set"),
    ('calibration_file = "c.json"\n[nodes.slm.calibrate]\npower_mw = 50.0', "", ["--um-per-px",
                                                                               "1"],
     r"power_mw = 50.0: above the node's max_power_mw_per_target \(10.0\)"),
    ('calibration_file = "c.json"\n[nodes.slm.calibrate]\ncamera = "lab.cam:Nope"', "",
     ["--um-per-px", "1"], r"\[nodes.slm.calibrate\] camera = 'lab.cam:Nope': cannot import"),
    ('calibration_file = "c.json"\n[nodes.slm.calibrate]\ngrd = 3', "", [],
     r"\[nodes.slm\] calibrate.grd: unknown key"),
])
def test_rig_calibrate_slm_refuses_with_one_line(tmp_path, capsys, slm, microscope, flags,
                                                 message):
    rc = cli.main(["calibrate", "slm", "--config", write_config(tmp_path, slm, microscope),
                   *flags])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


class SlideUnderTheScope:
    """An SLM over a fluorescent slide that the microscope images continuously: the
    far-field spot shows in each frame at ``px_from_uv`` [u, v, 1] (imaging px), and the
    frames are pushed to Rig as an acquisition PC does (``rig.readers.network``)."""

    shape = (64, 64)

    def __init__(self, endpoint, px_from_uv):
        import threading

        import zmq

        self.px_from_uv = px_from_uv
        self.spot = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.PUSH)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.thread = threading.Thread(target=self._acquire, daemon=True)
        self.thread.start()

    def display(self, phase):
        far = np.abs(np.fft.fft2(np.exp(1j * phase))) ** 2
        v, u = np.unravel_index(np.argmax(far), far.shape)
        uv = (np.array([u, v]) + 32) % 64 - 32  # offsets from the zero order
        with self.lock:
            self.spot = self.px_from_uv @ [*uv, 1.0]

    def fire(self, power_mw_total):
        return 0

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()

    def _acquire(self):
        from rig.readers.network import send_frame

        y, x = np.mgrid[0:96, 0:128]
        k = 0
        while not self.stop.wait(0.003):  # the scope's frame period
            with self.lock:  # a frame shows one SLM pattern, never half of two
                image = np.full((96, 128), 100.0)
                if self.spot is not None:
                    sx, sy = self.spot
                    image += 3000 * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * 1.2 ** 2))
                send_frame(self.sock, image.astype(np.uint16), k)
            k += 1


def test_the_microscope_own_frames_calibrate_the_slm(tmp_path):
    from stim.calibration import ReaderImager, measure

    theta = 0.4
    px_from_uv = np.array([[1.3 * np.cos(theta), -1.3 * np.sin(theta), 64.0],
                           [-1.3 * np.sin(theta), -1.3 * np.cos(theta), 48.0]])  # mirrored
    imager = ReaderImager(None, "zmq", {"endpoint": "tcp://127.0.0.1:0"}, frames=2)
    slm = SlideUnderTheScope(imager.reader.endpoint, px_from_uv)
    try:
        m = measure(slm, imager, um_per_px=2.0, grid=3, extent=0.5)
    finally:
        slm.close()
        imager.close()
    uv_from_px = np.linalg.inv(np.r_[px_from_uv, [[0, 0, 1]]])[:2]
    np.testing.assert_allclose(m.calibration.matrix[:, :2] * 2.0, uv_from_px[:, :2], atol=2e-3)
    np.testing.assert_allclose(m.calibration.matrix[:, 3], uv_from_px[:, 2], atol=0.1)
    assert m.residual_px.max() < 0.05
