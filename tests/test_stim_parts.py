"""Spec of ensemble design, responses, safety, holograms and the simulated SLM."""
import numpy as np
import pytest

from stim.design import RateLimiter, adaptive_ensemble, random_ensemble
from stim.device import SimulatedSLM
from stim.hologram import Calibration, HologramCache, wgs
from stim.posterior import Q, StreamingPosterior
from stim.responses import ResponseCollector, ResponseWindow, outcome
from stim.safety import SafetyGate, SafetyLimits
from stim import _kernels
from tests.naive_stim import ensemble_information, greedy_information


# --- design ---------------------------------------------------------------------------

def test_rate_limited_neurons_are_never_chosen():
    rng = np.random.default_rng(0)
    rl = RateLimiter(20, max_rate_hz=0.5)  # 2 s between stimulations of a neuron
    first = random_ensemble(rng, 5, rl.eligible(0.0))
    rl.record(first, 0.0)
    for _ in range(20):
        assert not np.isin(random_ensemble(rng, 5, rl.eligible(1.0)), first).any()
    assert rl.eligible(2.0)[first].all()


def test_too_few_eligible_neurons_is_a_clear_error():
    with pytest.raises(ValueError, match="eligible"):
        random_ensemble(np.random.default_rng(0), 5, np.zeros(10, bool))


def test_greedy_information_matches_naive():
    rng = np.random.default_rng(1)
    P = StreamingPosterior(30, 0.05, 0.05, 2, max_targets=4)
    P.lam[:] = np.clip(rng.normal(-2, 2, P.lam.shape) * Q, -3e4, 3e4).astype(np.int16)
    pool = np.arange(0, 30, 2, dtype=np.int64)
    cols = np.arange(P.J, dtype=np.int64)
    w = rng.uniform(0.5, 2, P.J)
    pi = 1 / (1 + np.exp(-P.lam.astype(float) / Q))
    for min_size in (4, 1):  # fixed size, and stopping once no member adds information
        fast, _ = _kernels.greedy_information(P.lam, Q, pool, cols, w, min_size, 4, 0.05, 0.05,
                                              0.0)
        assert list(fast) == greedy_information(pi, pool, 4, 0.05, 0.05, w, min_size)


def test_first_order_gain_loses_little_information_on_a_sparse_posterior():
    # most pairs are near the prior, as in a real posterior: the linearised gain (exact to
    # O(p^2)) may break near-ties differently but must find as informative an ensemble
    rng = np.random.default_rng(3)
    P = StreamingPosterior(200, 0.02, 0.1, 3, max_targets=12)
    P.lam[:] = np.where(rng.random(P.lam.shape) < 0.02, 3 * Q, -5 * Q).astype(np.int16)
    pool = np.arange(200, dtype=np.int64)
    cols = np.arange(P.J, dtype=np.int64)
    w = np.ones(P.J)
    pi = 1 / (1 + np.exp(-P.lam.astype(float) / Q))
    info = {}
    for linear_below in (0.0, 0.05):
        chosen, _ = _kernels.greedy_information(P.lam, Q, pool, cols, w, 12, 12, 0.02, 0.1,
                                                linear_below)
        info[linear_below] = ensemble_information(pi, chosen, 0.02, 0.1)
    assert info[0.05] >= 0.98 * info[0.0]


def test_adaptive_ensemble_respects_eligibility_and_size():
    rng = np.random.default_rng(2)
    P = StreamingPosterior(50, 0.05, 0.05, 2, max_targets=6)
    el = np.ones(50, bool)
    el[:25] = False
    m, info = adaptive_ensemble(P, rng, 6, el, min_size=6)
    assert m.size == 6 and np.all(m >= 25) and np.unique(m).size == 6 and info > 0
    m, _ = adaptive_ensemble(P, rng, 6, el)
    assert 1 <= m.size <= 6 and np.all(m >= 25)


# --- responses ------------------------------------------------------------------------

def _traces(rng, n=8, f=20, stim=11, responders=(2, 5)):
    """Responders rise from ``stim``, the frame the stimulation landed in, for 3 frames."""
    x = rng.normal(0, 0.01, (f, n)).astype(np.float32)
    x[stim: stim + 3, list(responders)] += 1.0
    return x


def test_outcome_finds_responders_and_excludes_targets():
    rng = np.random.default_rng(0)
    x = _traces(rng)
    x[11:14, 0] += 1.0  # the stimulated neuron itself lights up
    o = outcome(x, 11, [0, 1], ResponseWindow())
    assert o.y.tolist() == [2, 2, 1, 0, 0, 1, 0, 0] and not o.confounded and o.weight == 1.0


def test_outcomes_during_a_bout_are_flagged():
    rng = np.random.default_rng(0)
    moving = np.zeros(20, bool)
    moving[12] = True
    o = outcome(_traces(rng), 11, [0], ResponseWindow(confounded_weight=0.25), moving)
    assert o.confounded and o.weight == 0.25


def test_window_outside_traces_names_the_fix():
    with pytest.raises(ValueError, match="frames before"):
        outcome(np.zeros((10, 3)), 2, [0], ResponseWindow())


def test_collector_emits_outcome_once_window_is_complete():
    rng = np.random.default_rng(0)
    x = _traces(rng)
    col = ResponseCollector(8, ResponseWindow())
    for f in range(12):
        col.add_frame(f, x[f])
    col.add_stim(11, [0])
    col.set_moving(11, True)
    assert col.ready() == []
    for f in range(12, 14):
        col.add_frame(f, x[f])
    (f, tg, o), = col.ready()
    assert f == 11 and o.y[[2, 5]].tolist() == [1, 1] and o.confounded


def test_movement_reported_after_the_last_frames_traces_still_flags_the_outcome():
    rng = np.random.default_rng(0)
    x = _traces(rng)
    col = ResponseCollector(8, ResponseWindow())
    col.wait_movement = True  # a decoder reports movement, after each frame's traces
    for f in range(14):
        col.add_frame(f, x[f])
        if f < 13:
            col.set_moving(f, False)
    col.add_stim(11, [0])
    assert col.ready() == []  # traces complete, movement of frame 13 not yet known
    col.set_moving(13, True)
    (f, tg, o), = col.ready()
    assert f == 11 and o.confounded


def test_movement_reported_before_its_traces_is_kept():
    rng = np.random.default_rng(0)
    x = _traces(rng)
    col = ResponseCollector(8, ResponseWindow())
    col.wait_movement = True
    for f in range(14):
        col.set_moving(f, f == 12)  # the report comes first
        col.add_frame(f, x[f])
    col.add_stim(11, [0])
    (f, tg, o), = col.ready()
    assert o.confounded


def test_a_stalled_movement_source_does_not_stall_outcomes():
    rng = np.random.default_rng(0)
    x = _traces(rng)
    col = ResponseCollector(8, ResponseWindow(), movement_timeout_frames=2)
    col.wait_movement = True
    for f in range(14):
        col.add_frame(f, x[f])
        col.set_moving(f, False)
    col.add_stim(14, [0])
    for f in range(14, 18):
        col.add_frame(f, x[f])
    assert col.ready() == []
    col.add_frame(18, x[18])
    (f, tg, o), = col.ready()
    assert f == 14 and o.confounded  # frames without a report cannot be shown quiet


# --- safety ---------------------------------------------------------------------------

LIMITS = SafetyLimits(max_targets=3, max_power_mw_per_target=5, max_total_power_mw=12,
                      min_interval_s=1.0, max_rate_hz_per_neuron=0.25, n_neurons=100)


@pytest.fixture
def gate():
    g = SafetyGate(LIMITS)
    g.arm()
    return g


def test_unarmed_stim_is_refused():
    g = SafetyGate(LIMITS)
    d = g.check(np.array([1]), np.array([1.0]), 0.0)
    assert not d.ok and "armed" in d.reason and g.refused == 1


@pytest.mark.parametrize("targets, power, match", [
    ([1, 2, 3, 4], [1, 1, 1, 1], "max_targets"),
    ([1, 2], [6, 1], "max_power_mw_per_target"),
    ([1, 2, 3], [5, 5, 5], "max_total_power_mw"),
    ([1, 200], [1, 1], "distinct ids"),
    ([1, 2], [1], "shape"),
])
def test_stim_above_a_safety_limit_is_refused(gate, targets, power, match):
    d = gate.check(np.array(targets), np.array(power, float), 0.0)
    assert not d.ok and match in d.reason and gate.refused == 1


def test_min_interval_and_per_neuron_rate_are_enforced(gate):
    assert gate.check(np.array([1, 2]), np.array([1.0, 1.0]), 0.0).ok
    gate.fired([1, 2], 0.0)
    assert "min_interval_s" in gate.check(np.array([3]), np.array([1.0]), 0.5).reason
    assert "max_rate_hz_per_neuron" in gate.check(np.array([1]), np.array([1.0]), 2.0).reason
    assert gate.check(np.array([3]), np.array([1.0]), 2.0).ok
    assert gate.check(np.array([1]), np.array([1.0]), 4.0).ok


def test_bad_limits_name_the_key():
    with pytest.raises(ValueError, match="stim.safety.max_targets"):
        SafetyLimits(max_targets=0)


# --- holograms and the device ---------------------------------------------------------

CAL = Calibration(np.array([[0.2, 0, 0, 0], [0, 0.2, 0, 0]]), shape=(64, 64))


def test_wgs_puts_light_evenly_on_the_targets():
    uv = np.array([[10, 5], [-12, 8], [3, -15], [-7, -9]])
    phase, uniformity, efficiency = wgs(uv, (64, 64), iterations=30, device="cpu")
    assert phase.shape == (64, 64) and phase.dtype == np.float32
    assert 0 <= phase.min() and phase.max() < 2 * np.pi
    assert uniformity > 0.95 and efficiency > 0.5


def test_wgs_follows_requested_power_ratio():
    uv = np.array([[10, 5], [-12, 8], [3, -15]])
    phase, _, _ = wgs(uv, (64, 64), power=[1.0, 3.0, 2.0], iterations=30, device="cpu")
    far = np.abs(np.fft.fft2(np.exp(1j * phase))) ** 2
    p = far[uv[:, 1] % 64, uv[:, 0] % 64]
    assert p / p[0] == pytest.approx([1.0, 3.0, 2.0], rel=0.02)


def test_hologram_cache_hits_on_repeat_and_order_does_not_matter():
    pos = np.array([[50.0, 25, 0], [-60, 40, 0], [15, -75, 0]])
    cache = HologramCache(pos, CAL, iterations=5)
    a = cache.get([0, 1], [1.0, 2.0])
    b = cache.get([1, 0], [2.0, 1.0])
    assert a is b and cache.hits == 1 and cache.misses == 1


def test_target_on_zero_order_is_refused():
    with pytest.raises(ValueError, match="zero-order"):
        CAL.to_slm(np.array([[1.0, 1.0, 0.0]]))


def test_simulated_slm_records_fires_and_checks_shape():
    slm = SimulatedSLM((64, 64))
    slm.display(np.zeros((64, 64), np.float32))
    t = slm.fire(10.0)
    assert slm.fired == [(t, 10.0)]
    with pytest.raises(ValueError, match="shape"):
        slm.display(np.zeros((8, 8)))


def test_rig_map_skips_stimulations_whose_window_leaves_the_recording(tmp_path, monkeypatch,
                                                                      capsys):
    import types

    import rig.session
    from stim.commands import _map

    rng = np.random.default_rng(0)
    x = _traces(rng)
    s = types.SimpleNamespace(stim_frame=np.array([1, 10, 18]), n_neurons=8, traces=x,
                              stim_targets=np.array([[0, -1], [0, 1], [3, -1]]),
                              tail=np.zeros((0, 2)), truth={})
    monkeypatch.setattr(rig.session, "read", lambda path: s)
    args = types.SimpleNamespace(session=str(tmp_path / "s.mcap"), out=str(tmp_path / "c.npz"),
                                 k=1.0, alpha=0.05, beta=0.05, threshold=0.2, moving_rad=0.02)
    assert _map(args) == 0
    assert capsys.readouterr().out.startswith("1 stimulations used")
    s.stim_targets = np.array([[0, -1], [0, 99], [3, -1]])  # a bad id is an error, not skipped
    with pytest.raises(IndexError):
        _map(args)


def test_rig_map_accepts_a_high_miss_rate_and_refuses_uninformative_noise(tmp_path, capsys):
    import argparse
    import types

    from stim.commands import _map, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["map", "s.mcap", "--alpha", "0.08", "--beta", "0.7"])
    assert (args.alpha, args.beta) == (0.08, 0.7)
    bad = types.SimpleNamespace(session=str(tmp_path / "s.mcap"), out=None, k=1.0, alpha=0.3,
                                beta=0.7, threshold=0.2, moving_rad=0.02)
    assert _map(bad) == 2
    assert "--alpha/--beta" in capsys.readouterr().err
