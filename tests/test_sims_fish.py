"""The simulated fish: reproducibility, tuning, behaviour, configuration errors."""
import numpy as np
import pytest

from sims import STIMULUS_NAMES, Fish, FishConfig, FishConfigError
from tests import naive_sims


def run(fish, n):
    vols = [fish.step() for _ in range(n)]
    return np.stack([v.dff for v in vols]), np.concatenate([v.tail for v in vols]), vols


def test_seeded_runs_are_identical_bit_for_bit():
    cfg = FishConfig(n_neurons=300, seed=7)
    a, b = Fish(cfg), Fish(cfg)
    for f in (a, b):
        f.step()
        f.stimulate(np.array([3, 5, 8]))
    da, ta, va = run(a, 40)
    db, tb, vb = run(b, 40)
    assert da.tobytes() == db.tobytes()
    assert ta.tobytes() == tb.tobytes()
    assert [v.t_ns for v in va] == [v.t_ns for v in vb]
    assert np.array_equal(a.stimulations[0].responders, b.stimulations[0].responders)
    dc, _, _ = run(Fish(FishConfig(n_neurons=300, seed=8)), 41)
    assert not np.array_equal(da, dc[1:])


def test_numba_and_numpy_backends_agree():
    fast = Fish(FishConfig(n_neurons=400, seed=3))
    slow = Fish(FishConfig(n_neurons=400, seed=3, backend="numpy"))
    for f in (fast, slow):
        f.step()
        f.stimulate(np.arange(10))
    df, tf, _ = run(fast, 30)
    ds, ts, _ = run(slow, 30)
    # Same draws, same arithmetic; exp/sqrt may differ in the last bit between libms.
    np.testing.assert_allclose(df, ds, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tf, ts, rtol=1e-5, atol=1e-6)
    assert np.array_equal(fast.stimulations[0].postsynaptic, slow.stimulations[0].postsynaptic)


def test_calcium_transient_peaks_at_configured_amplitude_at_any_rate():
    for rate in (2.0, 30.0):
        f = Fish(FishConfig(n_neurons=50, volume_rate_hz=rate))
        ref = naive_sims.calcium_kernel(f._a_rise, f._a_decay, 400)
        assert f._amp * ref.max() == pytest.approx(f.config.spike_amp_dff, rel=1e-9)


@pytest.fixture(scope="module")
def session():
    from sims import simulate
    # Two schedule cycles (160 s) at 2 Hz, 1,500 neurons: about a second to simulate.
    return simulate(FishConfig(n_neurons=1500, seed=11), duration_s=320.0)


def test_tuned_populations_respond_to_their_direction(session):
    tuning, x, stim = session.truth["tuning"], session.traces, session.stimulus
    for code in range(1, len(STIMULUS_NAMES)):
        pop = tuning == code
        assert pop.sum() >= 10
        # Mean dF/F of this population under each stimulus; skip each epoch's first 4 s
        # (indicator rise) by comparing whole epochs, which the margin below allows for.
        means = np.array([x[stim == k][:, pop].mean() for k in range(len(STIMULUS_NAMES))])
        assert means.argmax() == code, (STIMULUS_NAMES[code], means)
        others = np.delete(means, code)
        assert means[code] > 3 * others.max(), (STIMULUS_NAMES[code], means)
    untuned = tuning < 0
    means = [x[stim == k][:, untuned].mean() for k in range(len(STIMULUS_NAMES))]
    assert np.ptp(means) < 0.1


def test_tail_bouts_follow_motor_activity(session):
    t = session.truth
    lat = t["latents"]
    bout = t["bout"]
    assert 0.05 < bout.mean() < 0.6
    # Bouts happen more when the motor integrators are driven (forward vs still).
    fwd, still = session.stimulus == 1, session.stimulus == 0
    assert bout[fwd].mean() > 1.5 * bout[still].mean()
    # Bout-carrying motor neurons are more active in bout volumes than in quiet ones.
    motor = t["motor_mask"] & np.isin(t["source"], (6, 7))
    x = session.traces[:, motor].mean(axis=1)
    assert x[bout].mean() > x[~bout].mean() + 0.1
    # Their summed activity correlates with bout activity, the background does not.
    act = lat[:, 6] + lat[:, 7]
    bg = session.traces[:, ~t["motor_mask"] & (t["tuning"] < 0)].mean(axis=1)
    assert np.corrcoef(x, act)[0, 1] > 0.4
    assert abs(np.corrcoef(bg, act)[0, 1]) < 0.3
    # Left whole-field motion turns the fish left (+), right motion right (-).
    cam_frame = np.searchsorted(session.t_ns, session.camera_t_ns, side="right") - 1
    cb = t["camera_bout"]
    onsets = np.flatnonzero(cb[1:] & ~cb[:-1]) + 1
    bias = np.array([session.camera_tail[o:o + 8, -1].mean() for o in onsets])
    code = session.stimulus[cam_frame[onsets]]
    assert bias[code == 2].mean() > 0.2 and bias[code == 3].mean() < -0.2


def test_bout_is_a_tail_beat_travelling_to_the_tip(session):
    cb = session.truth["camera_bout"]
    tip = session.camera_tail[:, -1]
    base = session.camera_tail[:, 0]
    assert np.all(session.camera_tail[~cb] == 0.0)
    assert np.abs(tip[cb]).mean() > 3 * np.abs(base[cb]).mean()  # amplitude grows to the tip
    # Tail-beat frequency from zero crossings within bouts: 20-35 Hz.
    onsets = np.flatnonzero(cb[1:] & ~cb[:-1]) + 1
    ends = np.flatnonzero(cb[:-1] & ~cb[1:]) + 1
    freqs = []
    for o in onsets[:50]:
        e = ends[ends > o][0]
        seg = tip[o:e] - tip[o:e].mean()
        crossings = np.count_nonzero(np.diff(np.sign(seg)) != 0)
        freqs.append(crossings / 2 / ((e - o) / 200.0))
    assert 15 < np.median(freqs) < 40


def test_camera_frames_tile_the_volumes_at_a_non_integer_rate_ratio():
    f = Fish(FishConfig(n_neurons=20, volume_rate_hz=30.0, camera_rate_hz=200.0))
    vols = [f.step() for _ in range(90)]
    t = np.concatenate([v.tail_t_ns for v in vols])
    assert len(t) == 600  # 3 s at 200 Hz
    assert np.all(np.abs(np.diff(t) - 5_000_000) <= 1)
    for v in vols:
        assert np.all((v.tail_t_ns >= v.t_ns) & (v.tail_t_ns < v.t_ns + 1e9 / 30))


@pytest.mark.parametrize("kwargs, field", [
    ({"n_neurons": 0}, "n_neurons"), ({"k_presyn": 0}, "k_presyn"),
    ({"volume_rate_hz": 0}, "volume_rate_hz"), ({"camera_rate_hz": 1.0}, "camera_rate_hz"),
    ({"p_false_pos": 1.5}, "p_false_pos"), ({"schedule": (("sideways", 3),)}, "schedule"),
    ({"indicator": "GCaMP9"}, "indicator"), ({"n_neurons": 2.5}, "n_neurons"),
    ({"backend": "cuda"}, "backend"), ({"volume_rate_hz": "2"}, "volume_rate_hz"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(FishConfigError, match=f"FishConfig.{field}"):
        FishConfig(**kwargs)


def test_step_rejects_a_wrong_out_buffer():
    f = Fish(FishConfig(n_neurons=10))
    with pytest.raises(ValueError, match="float32 array of shape"):
        f.step(out=np.zeros(10, np.float64))


def test_a_new_visual_protocol_takes_over_from_the_next_volume():
    fish = Fish(FishConfig(n_neurons=50, seed=1))
    for _ in range(3):
        fish.step()
    fish.set_schedule((("left", 1.0),))
    names = {fish.step().stimulus_name for _ in range(20)}
    assert names == {"left"}
    with pytest.raises(ValueError, match="unknown stimulus 'sideways'"):
        fish.set_schedule((("sideways", 1.0),))
