"""Photostimulation of the simulated fish against its ground-truth graph."""
import numpy as np
import pytest

from sims import Fish, FishConfig, simulate
from tests import naive_sims


def test_presynaptic_partners_are_k_distinct_others():
    f = Fish(FishConfig(n_neurons=500, k_presyn=6, seed=2))
    pre = f.presyn
    assert pre.shape == (500, 6) and pre.dtype == np.int32
    assert np.all(pre != np.arange(500)[:, None])
    assert all(len(set(row)) == 6 for row in pre.tolist())
    w = f.connectivity_matrix()
    assert w.sum() == 500 * 6 and np.all(w[pre[:, 0], np.arange(500)])
    assert np.array_equal(f.connectivity_matrix(sparse=True).toarray(), w)


def test_postsynaptic_set_is_the_or_of_presynaptic_partners():
    f = Fish(FishConfig(n_neurons=400, seed=4))
    rng = np.random.default_rng(0)
    for _ in range(5):
        targets = rng.choice(400, size=12, replace=False)
        st = f.stimulate(targets)
        f.step()
        assert set(st.postsynaptic.tolist()) == naive_sims.postsynaptic(f.presyn, targets)
        assert not set(st.responders.tolist()) & set(targets.tolist())


def test_stimulation_responses_match_ground_truth_up_to_p_and_q():
    p, q = 0.05, 0.1
    n = 2000
    f = Fish(FishConfig(n_neurons=n, p_false_pos=p, q_false_neg=q, seed=5))
    rng = np.random.default_rng(1)
    hit_post = n_post = hit_other = n_other = 0
    for _ in range(200):
        st = f.stimulate(rng.choice(n, size=20, replace=False))
        f.step()
        resp = np.zeros(n, bool)
        resp[st.responders] = True
        post = np.zeros(n, bool)
        post[st.postsynaptic] = True
        other = ~post
        other[st.targets] = False
        hit_post += resp[post].sum()
        n_post += post.sum()
        hit_other += resp[other].sum()
        n_other += other.sum()
    # Binomial counts: accept within 4 standard errors (false alarm rate ~6e-5 per check).
    rate_post, rate_other = hit_post / n_post, hit_other / n_other
    assert n_post > 10_000
    assert abs(rate_post - (1 - q)) < 4 * np.sqrt(q * (1 - q) / n_post), rate_post
    assert abs(rate_other - p) < 4 * np.sqrt(p * (1 - p) / n_other), rate_other


def test_responses_show_as_dff_transients_in_the_response_window():
    n = 1000
    f = Fish(FishConfig(n_neurons=n, seed=6, spont_bout_hz=0.01, schedule=(("still", 1.0),)))
    for _ in range(10):
        f.step()
    gains = {"targets": [], "responders": [], "silent": []}
    rng = np.random.default_rng(2)
    for _ in range(30):
        before = f.step().dff.copy()
        st = f.stimulate(rng.choice(n, size=10, replace=False))
        after = np.mean([f.step().dff for _ in range(2)], axis=0)  # the window
        for _ in range(8):  # let the transients decay before the next one
            f.step()
        silent = np.ones(n, bool)
        silent[st.targets] = silent[st.responders] = False
        gains["targets"].append((after - before)[st.targets].mean())
        gains["responders"].append((after - before)[st.responders].mean())
        gains["silent"].append((after - before)[silent].mean())
    m = {k: float(np.mean(v)) for k, v in gains.items()}
    assert m["targets"] > 0.5 and m["responders"] > 0.25, m
    assert abs(m["silent"]) < 0.05, m


def test_stimulation_perturbs_behaviour_a_little():
    cfg = FishConfig(n_neurons=100, seed=9, schedule=(("still", 1.0),))
    calm, poked = Fish(cfg), Fish(cfg)
    bouts = {"calm": 0, "poked": 0}
    for v in range(1200):
        if v % 4 == 0:
            poked.stimulate(np.arange(5))
        bouts["calm"] += calm.step().bout
        bouts["poked"] += poked.step().bout
    assert bouts["poked"] > 1.2 * bouts["calm"], bouts
    assert bouts["poked"] < 4 * bouts["calm"], bouts


def test_stimulate_rejects_bad_targets():
    f = Fish(FishConfig(n_neurons=50))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        f.stimulate(np.array([3, 50]))
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        f.stimulate(np.array([1.5]))
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        f.stimulate([])


def test_simulated_session_carries_the_ground_truth():
    cfg = FishConfig(n_neurons=300, k_presyn=4, volume_rate_hz=30.0, seed=3)
    s = simulate(cfg, duration_s=4.0, stim_every=15, ensemble_size=7)
    assert s.n_frames == 120 and s.n_neurons == 300 and s.frame_rate_hz == 30.0
    assert s.tail.shape == (120, 8) and s.camera_tail.shape == (800, 8)
    assert s.positions.shape == (300, 3) and s.regions.shape == (300,)
    assert s.stimulus_names[0] == "still" and len(s.region_names) == s.regions.max() + 1
    t = s.truth
    assert t["presyn"].shape == (300, 4) and t["presyn"].dtype == np.int32
    assert t["bout"].shape == (120,) and t["camera_bout"].shape == (800,)
    for key in ("tuning", "motor_mask", "motor_side", "source", "latents", "stim_in_bout"):
        assert key in t
    m = len(s.stim_frame)
    assert m == 7 and s.stim_targets.shape == (7, 7)
    assert np.all(s.stim_frame == np.arange(1, 8) * 15)
    ptr, ids = t["stim_postsynaptic_ptr"], t["stim_postsynaptic"]
    assert ptr.shape == (m + 1,) and ptr[-1] == len(ids)
    for i in range(m):
        expected = naive_sims.postsynaptic(t["presyn"], s.stim_targets[i])
        assert set(ids[ptr[i]:ptr[i + 1]].tolist()) == expected
    assert s.meta["config"]["seed"] == 3 and s.meta["source"] == "sims.simulate"


def test_simulate_quiescent_only_never_stimulates_during_a_bout():
    s = simulate(FishConfig(n_neurons=100, seed=1), n_frames=400, stim_every=2,
                 ensemble_size=3, quiescent_only=True)
    assert len(s.stim_frame) > 50 and not s.truth["stim_in_bout"].any()


def test_simulated_session_survives_a_write_and_read(tmp_path):
    from rig import session as rs
    s = simulate(FishConfig(n_neurons=50, seed=2), n_frames=20, stim_every=5, ensemble_size=3)
    back = rs.read(rs.write(tmp_path / "fish.mcap", s))
    assert np.array_equal(back.traces, s.traces)
    assert np.array_equal(back.truth["presyn"], s.truth["presyn"])


def test_a_bout_in_the_response_window_confounds_the_motor_neurons():
    # Alternating still and forward motion: some response windows hold a bout, some not.
    n = 1500
    f = Fish(FishConfig(n_neurons=n, seed=8, schedule=(("still", 10.0), ("forward", 10.0))))
    for _ in range(5):
        f.step()
    rng = np.random.default_rng(3)
    rise = {True: [], False: []}
    motor = f.motor_mask & np.isin(f.anatomy.src, (6, 7))
    for _ in range(150):
        before = f.step()
        st = f.stimulate(rng.choice(n, size=10, replace=False))
        window = [f.step() for _ in range(2)]
        if before.bout:
            continue  # compare only stimulations that start from quiescence
        bout_in_window = any(v.bout for v in window)
        after = np.mean([v.dff for v in window], axis=0)
        silent_motor = motor.copy()
        silent_motor[st.responders] = silent_motor[st.targets] = False
        rise[bout_in_window].append((after - before.dff)[silent_motor].mean())
    assert len(rise[True]) >= 10 and len(rise[False]) >= 10
    # Motor neurons that the stimulation did not reach still "respond" when a bout falls in
    # the window: the bout, not the stimulation, drives them.
    means = {k: float(np.mean(v)) for k, v in rise.items()}
    assert means[True] > means[False] + 0.05, means
