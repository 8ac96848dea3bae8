"""The posterior's stimulation path: what an update allocates, keeps and refuses."""
import numpy as np
import pytest

from stim.posterior import StreamingPosterior


def test_candidate_lists_grow_with_use_instead_of_being_allocated_full():
    # at 50 targets a list may hold 2,000 candidates, but a column holds tens: allocated
    # full, the lists were 2.6x the log-odds themselves (160 MB at N = 10,000)
    n = 3000
    P = StreamingPosterior(n, 0.02, 0.1, 5, max_targets=50, refresh_budget=0)
    assert P.memory_bytes < 2 * P.lam.nbytes
    width = P.cand.shape[1]
    # column 0 responds to every test: one response lifts a member above the threshold
    # (prior -6.4 + 3.8 > tau -2.9), so its list outgrows the first allocation
    members = np.random.default_rng(0).permutation(np.arange(1, n))[: 10 * 50].reshape(10, 50)
    y = np.zeros(n, np.uint8)
    y[0] = 1
    for m in members:
        P.update(m, y)
    assert P.cand.shape[1] > width
    assert P.overflow_total == 0
    assert sorted(P.cand[0, : P.ncand[0]].tolist()) == sorted(members.ravel().tolist())


@pytest.mark.parametrize("members, y, match", [
    ([3, 3], np.zeros(20, np.uint8), "distinct"),
    ([3, 25], np.zeros(20, np.uint8), "distinct"),
    ([3, 4], np.full(20, 3, np.uint8), "unobserved"),
    ([3, 4], np.r_[np.zeros(19, np.int64), -1], "unobserved"),
])
def test_a_refused_update_changes_nothing(members, y, match):
    P = StreamingPosterior(20, 0.05, 0.05, 2, max_targets=3)
    P.update(np.array([0, 1]), np.r_[0, 0, 1, np.zeros(17, np.uint8)])
    before = {name: getattr(P, name).copy() for name in
              ("lam", "stim_count", "n_tests_of", "ncand", "ys")}
    with pytest.raises(ValueError, match=match):
        P.update(np.array(members), y)
    assert P.n_tests == 1
    for name, value in before.items():
        assert np.array_equal(getattr(P, name), value), name
    P.update(np.array([3, 4]), np.zeros(20, np.uint8))  # and it still takes good ones
    assert P.n_tests == 2 and P.stim_count[[3, 4]].tolist() == [1, 1]
