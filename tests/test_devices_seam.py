"""One seam for devices: a lab's reader and SLM, each one class in its own file
(``tests/devices_example.py``), named in the config and driven by Rig's own nodes."""
import numpy as np
import pytest

from rig import config as cfg
from rig.devices import DeviceError, device_class, open_device
from rig.messages import Message
from rig.readers import READERS, Reader
from rig.readers.roi import RoiMasks
from rig.recording import read_session
from rig.supervisor import Supervisor
from stim import calibration
from stim.calibration import IMAGERS, Imager
from stim.device import SLMS, SLMDevice
from stim.hologram import Calibration
from stim.slm_node import SLM
from test_readers_roi import blobs
from test_stim_node import make

pytestmark = pytest.mark.timeout(60)
N_FRAMES = 20


def test_a_lab_reader_named_in_the_config_feeds_traces_and_positions_onto_the_bus(tmp_path):
    labels = blobs()
    np.save(tmp_path / "labels.npy", labels)
    t0 = 1_795_000_000_000_000_000
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"microscope": {"class": "rig.readers.node:Microscope",
                                    "reader": "devices_example:SyntheticReader",
                                    "reader_settings": {"labels": str(tmp_path / "labels.npy"),
                                                        "frames": N_FRAMES, "t0_ns": t0},
                                    "rois": str(tmp_path / "labels.npy"), "motion": False,
                                    "um_per_px": 2.0, "z_um": 30.0},
                     "recorder": {"class": "rig.recording.recorder:Recorder"}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        assert sup.wait_for(lambda s: s.stats("recorder").get("topics", {}).get("traces", 0)
                            >= N_FRAMES and s.stats("microscope").get("synthetic_frames", 0)
                            >= N_FRAMES, timeout_s=40), sup.status()
        stats = sup.stats("microscope")
    finally:
        sup.shutdown()
    assert stats["synthetic_frames"] == N_FRAMES and "failed" not in stats  # reader.stats()
    session = read_session(tmp_path / "run")
    assert session.traces.shape == (N_FRAMES, labels.max())
    np.testing.assert_array_equal(session.t_ns, t0 + np.arange(N_FRAMES) * 50_000_000)
    # the ROI centroids, in imaging µm, for the SLM node and the dashboard
    centroids = RoiMasks.from_labels(labels).centroids()
    np.testing.assert_allclose(session.positions[:, :2], centroids * 2.0, rtol=1e-6)
    assert (session.positions[:, 2] == 30.0).all()


def test_a_lab_slm_named_in_the_config_is_aimed_through_the_calibration_file(tmp_path):
    matrix = np.array([[0.5, 0, 0, 4.0], [0, 0.5, 0, -3.0]])  # µm -> far-field px
    cal = calibration.Measurement(Calibration(matrix, (64, 64)), np.zeros((3, 2)),
                                  np.zeros((3, 2)), 1.0, np.zeros(3))
    calibration.save(tmp_path / "cal.json", cal)
    node, pub = make(SLM, "slm", tmp_path, device="devices_example:LabSLM",
                     device_settings={"log_dir": str(tmp_path / "slm")},
                     calibration_file=str(tmp_path / "cal.json"), max_targets=10,
                     min_interval_s=0.0, max_rate_hz_per_neuron=1e6)
    node.armed = True
    positions = np.array([[20.0, 10, 0], [-30, 24, 0], [12, -40, 0]], np.float32)
    node.on_message(Message("anatomy", {"positions": positions}))
    node.on_message(Message("stim.plan", {"targets": np.array([0, 2], np.int32),
                                          "power_mw": np.array([2, 3], np.float32)}))
    (fired,) = pub.take("stim.fired")
    node.teardown()
    phase = np.load(tmp_path / "slm" / "phase0.npy")
    far = np.abs(np.fft.fft2(np.exp(1j * phase))) ** 2
    uv = np.rint(positions[[0, 2], :2] * 0.5 + [4.0, -3.0]).astype(int)  # (14, 2), (10, -23)
    assert far[uv[:, 1] % 64, uv[:, 0] % 64].sum() > 0.8 * far.sum()
    np.testing.assert_allclose(fired["spots_um"], positions[[0, 2], :2])
    assert (tmp_path / "slm" / "fired.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "slm" / "closed").exists()


def test_a_real_slm_without_a_calibration_file_is_refused(tmp_path):
    with pytest.raises(calibration.CalibrationError, match="calibration_file: missing .* `"
                                                           "rig calibrate slm"):
        make(SLM, "slm", tmp_path, device="devices_example:LabSLM",
             device_settings={"log_dir": str(tmp_path)})


@pytest.mark.parametrize("spec, settings, message", [
    ("camera", {}, r"reader = 'camera': use one of \['tiff', 'zmq'\] or 'package.module:Class'"),
    ("no_such_lab.scope:Reader", {}, r"cannot import it \(ModuleNotFoundError"),
    ("devices_example:Nothing", {}, r"module devices_example has no class Nothing"),
    ("devices_example:LabSLM", {}, r"lacks cancel\(\), next_frame\(\), stats\(\): it must "
                                   r"follow rig.readers.Reader"),
    ("devices_example:SyntheticReader", {"labls": "x.npy"},
     r"reader_settings for .devices_example:SyntheticReader.: unknown key\(s\) labls "
     r"\(valid keys: labels, frames, t0_ns\)"),
])
def test_a_device_that_cannot_be_loaded_is_one_clear_line(spec, settings, message):
    with pytest.raises(DeviceError, match=message):
        open_device(spec, Reader, READERS, "reader", settings, shape=None, timeout_s=1.0)


class ReaderWithoutRate:
    """Has the methods of a reader but not its ``rate_hz``."""

    def __init__(self, shape, timeout_s):
        pass

    def next_frame(self, timeout_s=None):
        return None

    def cancel(self):
        pass

    def close(self):
        pass

    def stats(self):
        return {}


def test_a_device_without_its_protocol_attributes_is_refused():
    with pytest.raises(DeviceError, match=r"reader = 'test_devices_seam:ReaderWithoutRate' has "
                                          r"no attribute rate_hz: it must follow "
                                          r"rig.readers.Reader"):
        open_device("test_devices_seam:ReaderWithoutRate", Reader, READERS, "reader", {},
                    shape=None, timeout_s=1.0)


def test_built_in_devices_follow_their_protocols():
    for name in READERS:
        device_class(name, Reader, READERS, "reader")
    for name in SLMS:
        device_class(name, SLMDevice, SLMS, "slm device")
    for name in IMAGERS:
        device_class(name, Imager, IMAGERS, "calibrate camera")


def test_the_example_rig_config_loads_and_names_devices_that_exist():
    import msgspec

    config = cfg.load(cfg.builtin("rig-example"))
    assert {n.machine for n in config.nodes.values()} == {"scope-pc", "gpu-box"}
    assert config.bus.curve and config.bus.machine == "scope-pc"
    scope = config.nodes["microscope"].settings
    device_class(scope["reader"], Reader, READERS, "reader")
    slm = msgspec.convert(config.nodes["slm"].settings, SLM.Settings)
    device_class(slm.device, SLMDevice, SLMS, "slm device")
    device_class(slm.calibrate.camera, Imager, IMAGERS, "camera")
    assert slm.device_settings["driver"].startswith("slmsuite.hardware.slms.")
    assert not config.raw["run"]["arm_on_start"]


def test_naming_an_slmsuite_slm_imports_neither_slmsuite_nor_opencv():
    """slmsuite imports OpenCV and matplotlib, whose Qt clashes with the dashboard's: only
    the SLM node's process (and `rig calibrate slm`) may load them, when the device opens."""
    import subprocess
    import sys

    code = ("import sys, rig.cli, rig.config as c, gui.app, stim.slm_node, stim.calibration\n"
            "c.load(c.builtin('rig-example'))\n"
            "print(sorted(m for m in ('slmsuite', 'cv2', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
