"""Each panel against synthetic messages, and the whole window attached to a synthetic bus.

Synthetic messages have the exact fields the simulator, camera, decoder and planner publish
(see gui/__init__.py), so these tests hold without those nodes running.
"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import numpy as np
import pytest

import naive_gui
from gui.app import MainWindow
from gui.panels.anatomy import VIEWS, AnatomyPanel
from gui.panels.behaviour import BehaviourPanel, rolling_r
from gui.panels.connectivity import ConnectivityPanel, precision_recall, truth_block
from gui.store import LiveStore
from rig.bus import Endpoints, Publisher, wait_connected, Subscriber
from rig.messages import Message

N, S, K = 400, 8, 3


def fish(seed=0):
    rng = np.random.default_rng(seed)
    positions = np.column_stack([rng.uniform(20, 830, N), rng.uniform(-230, 230, N),
                                 rng.uniform(30, 250, N)]).astype(np.float32)
    regions = rng.integers(0, 4, N).astype(np.int16)
    presyn = np.stack([rng.choice(np.delete(np.arange(N), j), K, replace=False)
                       for j in range(N)]).astype(np.int32)
    return positions, regions, presyn


def frame_messages(f, rng, tail_tip):
    t = 1_000_000_000 + f * 33_000_000
    dff = rng.standard_normal(N).astype(np.float32)
    tail = np.zeros(S, np.float32)
    tail[-1] = tail_tip
    pred = tail + np.float32(0.05) * rng.standard_normal(S).astype(np.float32)
    return [Message("traces", {"dff": dff}, frame=f, t_acq_ns=t),
            Message("tail", {"angles": tail}, frame=f, t_acq_ns=t),
            Message("decoded", {"pred": pred}, {"moving": False}, frame=f, t_acq_ns=t),
            Message("behaviour", {"angles": tail}, {"cum_angle": float(tail[-1]),
                                                     "vigour": 0.0}, frame=f, t_acq_ns=t)]


def anatomy_messages(positions, regions, presyn):
    return [Message("anatomy", {"positions": positions, "regions": regions},
                    {"region_names": ["a", "b", "c", "d"]}),
            Message("sim.truth", {"presyn": presyn})]


def posterior_message(presyn, ids, n_stims):
    truth = truth_block(presyn, ids)
    p = np.where(truth, 0.9, 0.05).astype(np.float32)
    p[0, :] = 0.7  # row 0: false positives wherever it is not a true partner
    degree = np.zeros(N, np.float32)
    degree[ids] = p.sum(axis=1)
    return Message("posterior", {"marginals": p, "ids": ids.astype(np.int32),
                                 "out_degree": degree},
                   {"n_stims": n_stims, "confident_fraction": 0.5, "stop": False})


@pytest.fixture
def store():
    positions, regions, presyn = fish()
    store = LiveStore(capacity=256)
    for msg in anatomy_messages(positions, regions, presyn):
        store.add(msg)
    rng = np.random.default_rng(1)
    tips = np.sin(np.arange(120) / 5.0)
    for f, tip in enumerate(tips):
        for msg in frame_messages(f, rng, tip):
            store.add(msg)
    store.add(Message("stim.plan", {"targets": np.array([3, 10, 99], np.int32),
                                    "power_mw": np.full(3, 5, np.float32)}))
    store.add(posterior_message(presyn, np.arange(60), 42))
    return store


def test_rolling_r_matches_corrcoef_in_every_window():
    rng = np.random.default_rng(2)
    a = rng.standard_normal(200)
    b = a + rng.standard_normal(200)
    b[50:60] = 1.0  # a constant stretch: r undefined only where b has no variance
    fast, slow = rolling_r(a, b, 10), naive_gui.rolling_r(a, b, 10)
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], atol=1e-9)


@pytest.mark.parametrize("value", [0.1, 1.7, 123.456])
def test_rolling_r_is_nan_where_a_non_integer_series_is_constant(value):
    # Summed squares of a non-integer constant cancel to rounding error, not to zero.
    a = np.random.default_rng(3).standard_normal(100)
    assert np.isnan(rolling_r(a, np.full(100, value), 10)).all()
    assert np.isnan(rolling_r(np.full(100, value), a, 10)).all()


def test_truth_block_and_scores_match_brute_force():
    _, _, presyn = fish()
    ids = np.arange(0, N, 7)
    block = truth_block(presyn, ids)
    assert np.array_equal(block, naive_gui.truth_block(presyn, ids))
    estimate = block.copy()
    estimate[0, :] = True
    tp = np.count_nonzero(block)
    precision, recall = precision_recall(estimate, block)
    assert recall == 1.0 and precision == pytest.approx(tp / np.count_nonzero(estimate))


def test_behaviour_panel_correlates_decoded_with_observed_by_frame(qtbot, store):
    panel = BehaviourPanel(corr_frames=50)
    qtbot.addWidget(panel)
    panel.refresh(store)
    assert panel.n_matched == 120 and panel.observed == "camera"
    tail = store.last_frames("tail", 50)[0][:, -1]
    pred = store.last_frames("decoded", 50)[0][:, -1]
    assert panel.r == pytest.approx(np.corrcoef(tail, pred)[0, 1], abs=1e-6)
    assert panel.r > 0.9


def test_behaviour_panel_falls_back_to_the_simulators_true_tail():
    store = LiveStore()
    angles = np.zeros((10, S), np.float32)
    angles[:, -1] = 0.3
    store.add(Message("sim.tail", {"angles": angles}, frame=0, t_acq_ns=5))
    store.add(Message("decoded", {"pred": np.zeros(S, np.float32)}, frame=0, t_acq_ns=5))
    panel = BehaviourPanel()
    panel.refresh(store)
    assert panel.observed == "true (sim)"
    assert panel.tail_curve.getData()[1][0] == pytest.approx(np.degrees(0.3))


def test_anatomy_panel_draws_the_max_of_neurons_per_pixel_and_rings_the_ensemble(qtbot, store):
    panel = AnatomyPanel(um_per_px=8.0)
    qtbot.addWidget(panel)
    panel.refresh(store)
    assert panel.n == N and panel.ensemble.tolist() == [3, 10, 99]
    values, _ = panel._values(store)
    positions = store.anatomy["positions"]
    for image, (_, ax_x, ax_y, _) in zip(panel.images, VIEWS):
        assert np.array_equal(image, naive_gui.max_image(positions, values, ax_x, ax_y, 8.0))
    rings = panel.rings[0].getData()
    assert np.allclose(rings[0], positions[[3, 10, 99], 0])


@pytest.mark.parametrize("mode", ["salience", "connectivity", "region"])
def test_anatomy_panel_colours_by_each_mode_or_says_what_is_missing(qtbot, store, mode):
    panel = AnatomyPanel()
    qtbot.addWidget(panel)
    panel.set_mode(mode)
    panel.refresh(store)
    if mode == "salience":  # no decoder salience in this store
        assert "no salience" in panel.info.text() and not panel.images[0].any()
    else:
        assert panel.images[0].any()


def test_connectivity_panel_scores_the_posterior_against_ground_truth(qtbot, store):
    panel = ConnectivityPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    _, _, presyn = fish()
    truth = truth_block(presyn, np.arange(60))
    estimate = truth.copy()
    estimate[0, :] = True
    np.fill_diagonal(estimate, False)
    assert panel.scores == pytest.approx(precision_recall(estimate, truth))
    assert panel.count.text() == "stimulations: 42"
    assert "not met" in panel.stop_label.text()
    assert panel.items[0].image.shape == (60, 60)


def test_window_attached_to_a_bus_fills_every_panel(qtbot, proxy):
    positions, regions, presyn = fish()
    pub = Publisher(proxy.pub, "synthetic")
    probe = Subscriber(proxy.sub, ())
    wait_connected(pub, probe, "_hello.probe")
    probe.close()
    # No supervisor here: the control endpoint answers nothing (STATUS polls time out).
    window = MainWindow(Endpoints(proxy.pub, proxy.sub, "tcp://127.0.0.1:9"))
    qtbot.addWidget(window)
    rng = np.random.default_rng(3)
    frame = 0

    def publish_until_filled():
        nonlocal frame
        for msg in [*anatomy_messages(positions, regions, presyn),
                    *frame_messages(frame, rng, np.sin(frame / 5.0)),
                    posterior_message(presyn, np.arange(60), frame)]:
            pub.send(msg)
        frame += 1
        panels = window.panels
        return (panels["activity"].n == N and panels["anatomy"].n == N
                and panels["behaviour"].n_matched > 10
                and panels["connectivity"].items[0].image is not None)

    try:
        qtbot.waitUntil(publish_until_filled, timeout=20_000)
        assert window.redraws > 0
    finally:
        window.close()
        pub.close()


def test_camera_feed_fills_the_camera_panel_and_sends_tail_clicks_as_set(qtbot, store):
    from gui.camera_feed import CameraFeed
    from gui.panels.camera import CameraPanel
    from rig.node import Verb

    image = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8)
    store.add(Message("camera.frame", {"image": image, "points": np.zeros((9, 2), np.float32)},
                      source="cam"))
    store.add(Message("camera.stats", meta={"frames": 7, "lost": 1}, source="cam"))
    panel = CameraPanel()
    qtbot.addWidget(panel)
    sent = []
    feed = CameraFeed(panel, lambda verb, target, args: sent.append((verb, target, args)))
    feed.refresh(store)
    assert np.array_equal(panel.image.image, image)
    t, cum, _, _ = panel.history()
    assert len(t) == store.behaviour.total  # every camera-rate sample, once
    feed.refresh(store)
    assert len(panel.history()[0]) == store.behaviour.total
    assert "lost 1" in panel.info.text()
    panel.start_setting_tail()
    panel.click_at(10, 20)
    panel.click_at(40, 20)
    assert sent == [(Verb.SET, "cam", {"node": "cam", "key": "tail", "value": [10, 20, 40, 20]})]


def test_controls_send_every_action_as_a_control_verb(qtbot):
    from PyQt6.QtCore import Qt

    from gui.panels.controls import ControlsPanel
    from gui.state import LoopState
    from rig.node import Verb

    sent = []
    panel = ControlsPanel(lambda verb, target="*", args=None: sent.append((verb, target, args)),
                          confirm=lambda *_: True)
    qtbot.addWidget(panel)
    store = LiveStore()
    store.add(Message("heartbeat", meta={"status": "running", "running": True, "armed": False},
                      source="planner"))
    store.add(Message("heartbeat", meta={"status": "running", "running": True, "armed": False,
                                         "stats": {"recording": False}}, source="recorder"))
    store.add(Message("stim.plan", {"targets": np.zeros(1, np.int32),
                                    "power_mw": np.zeros(1, np.float32)}, source="planner"))
    store.add(Message("stimulus", meta={"name": "left"}, source="fish"))
    panel.loop = LoopState("running")
    panel.refresh(store)
    for button in (panel.pause_button, panel.arm_button,
                   panel.disarm_button, panel.record_button, panel.mapping_button):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    panel.protocol_box.setCurrentText("omr")
    qtbot.mouseClick(panel.protocol_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    panel.loop = LoopState("paused")
    panel.refresh(store)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert [(v, t) for v, t, _ in sent] == [
        (Verb.PAUSE, "*"), (Verb.ARM, "*"), (Verb.DISARM, "*"),
        (Verb.RECORD, "*"), (Verb.PAUSE, "planner"), (Verb.SET, "fish"), (Verb.STOP, "*"),
        (Verb.START, "*")]
    assert sent[3][2] == {"on": True}
    assert sent[5][2] == {"node": "fish", "key": "protocol", "value": "omr"}
    assert panel.mapping is True and "recording: off" in panel.record_label.text()


def test_armed_banner_follows_the_nodes_not_the_button(qtbot):
    from gui.panels.controls import ControlsPanel

    panel = ControlsPanel(lambda *a, **k: None)
    qtbot.addWidget(panel)
    store = LiveStore()
    store.add(Message("heartbeat", meta={"status": "running", "armed": True}, source="slm"))
    store.add(Message("heartbeat", meta={"status": "running", "armed": False}, source="fish"))
    panel.refresh(store)
    assert panel.armed_label.text() == "STIMULATION ARMED"
    store.add(Message("heartbeat", meta={"status": "running", "armed": False}, source="slm"))
    panel.refresh(store)
    assert panel.armed_label.text() == "stimulation disarmed"
    styled = []
    panel.armed_label.setStyleSheet = styled.append
    for _ in range(3):  # no flip: the banner's style sheet is left alone
        panel.refresh(store)
    assert styled == []
    store.add(Message("heartbeat", meta={"status": "running", "armed": True}, source="slm"))
    panel.refresh(store)
    assert len(styled) == 1 and panel.armed_label.text() == "STIMULATION ARMED"


def test_window_redraws_each_panel_at_most_at_its_rate(qtbot):
    from gui.app import REDRAW_HZ

    window = MainWindow(fps=30)
    qtbot.addWidget(window)
    window.redraw_timer.stop()
    calls = {name: 0 for name in window.refreshers}

    def counting(name):
        return lambda store: calls.__setitem__(name, calls[name] + 1)

    window.refreshers = {name: counting(name) for name in window.refreshers}
    for tick in range(60):  # two seconds of 30 Hz ticks on the window's own clock
        window.redraw(now=tick / 30)
    for name, count in calls.items():
        expected = 2 * min(REDRAW_HZ.get(name, 30.0), 30.0)
        assert expected - 1 <= count <= expected + 1, (name, count)
    window.close()


def test_pool_keeps_the_largest_value_of_each_block():
    from gui.panels.connectivity import pool

    values = np.zeros((10, 10), np.float32)
    values[9, 0] = 1.0
    pooled = pool(values, 4)
    assert pooled.shape == (4, 4) and pooled[3, 0] == 1.0 and pooled.sum() == 1.0
    mean = pool(np.ones((10, 10), np.float32), 4, "mean")
    assert np.allclose(mean, 1.0)  # partial edge blocks are averaged over real entries only
    assert pool(values, 20) is values


def test_a_failing_panel_is_logged_once_and_the_others_keep_drawing(qtbot, caplog):
    window = MainWindow()
    qtbot.addWidget(window)
    window.redraw_timer.stop()
    drawn = []

    def broken(store):
        raise RuntimeError("a drawing bug")

    window.refreshers = {"broken": broken, "fine": drawn.append}
    for tick in range(10):
        window.redraw(now=float(tick))
    assert len(drawn) == 10
    assert sum("broken panel failed" in r.getMessage() for r in caplog.records) == 1
    window.close()


def test_health_lists_nodes_edges_and_the_latest_events(qtbot):
    from gui.panels.health import HealthPanel

    store = LiveStore()
    store.add(Message("heartbeat", source="slm", meta={
        "status": "running", "running": True, "armed": True, "msgs_in": 5, "malformed": 0,
        "drops": {"stim.plan": 2}, "counters": {"msgs_out": 4},
        "handler": {"c": {"30": 5}, "max": 1_500_000},
        "latency": {"stim.plan": {"hop": {"c": {"30": 5}, "max": 1_000_000},
                                  "age": {"c": {"50": 5}, "max": 90_000_000}}}}))
    store.add(Message("log", source="slm", meta={"level": "WARNING",
                                                  "text": "stimulation refused: too soon"}))
    panel = HealthPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    cells = [panel.nodes_table.item(0, c).text() for c in range(panel.nodes_table.columnCount())]
    assert cells[:4] == ["slm", "running", "yes", "yes"] and cells[7] == "2"
    assert "slm<-stim.plan" in panel.edges
    assert panel.edges["slm<-stim.plan"]["age"].max_ns == 90_000_000
    assert "stimulation refused: too soon" in panel.events.text()


def test_a_traces_message_without_dff_is_counted_and_the_window_keeps_drawing(qtbot, caplog):
    window = MainWindow()
    qtbot.addWidget(window)
    window.redraw_timer.stop()
    rng = np.random.default_rng(0)
    for f in range(3):
        window.store.add(Message("traces", {"other": np.zeros(N, np.float32)}, frame=f))
        window.store.add(Message("traces", {"dff": np.float32(1.0)}, frame=f))  # 0-d dff
        for msg in frame_messages(f, rng, 0.1):
            window.store.add(msg)
    assert window.store.malformed == 6 and window.store.unfiled["traces"] == 6
    assert sum("cannot file a 'traces'" in r.getMessage() for r in caplog.records) == 1
    for tick in range(10):
        window.redraw(now=float(tick))
    assert window.panels["activity"].n == N
    assert "malformed 6" in window.status.text()
    window.store.set_subscriber_stats(10, 1, {})  # the subscriber's rejects add to it
    assert window.store.malformed == 7
    window.close()


def test_status_polls_wait_for_the_previous_reply_so_clicks_never_queue_behind_them(qtbot):
    from concurrent.futures import Future

    from rig.node import Verb

    window = MainWindow()
    qtbot.addWidget(window)
    window.status_timer.stop()
    sent = []

    class Control:
        def send(self, verb, target="*", args=None):
            sent.append(Verb(verb))
            return Future()

        def close(self):
            pass

    window.control = Control()
    for _ in range(5):  # the supervisor does not answer: one STATUS only
        window._poll_status()
    assert sent == [Verb.STATUS]
    window._status_future.set_result({"ok": True})
    window._poll_status()
    window.send(Verb.ARM)
    assert sent == [Verb.STATUS, Verb.STATUS, Verb.ARM]
    window.close()


@pytest.mark.parametrize("sort", ["region", "salience"])
def test_activity_sort_chosen_before_its_data_applies_when_the_data_arrives(qtbot, sort):
    from gui.panels.activity import ActivityPanel

    panel = ActivityPanel(window=20)
    qtbot.addWidget(panel)
    store = LiveStore()
    rng = np.random.default_rng(1)
    store.add(frame_messages(0, rng, 0.0)[0])
    panel.set_sort(sort)
    panel.refresh(store)
    assert panel._order.tolist() == list(range(N)) and "yet" in panel.sort_note
    positions, regions, _ = fish()
    salience = rng.standard_normal(N).astype(np.float32)
    if sort == "region":
        store.add(anatomy_messages(positions, regions, np.zeros((N, K), np.int32))[0])
        expected = np.argsort(regions, kind="stable")
    else:
        store.add(Message("salience", {"salience": salience}))
        expected = np.argsort(-np.abs(salience), kind="stable")
    panel.refresh(store)  # no new frame: the order still follows the new data
    assert panel._order.tolist() == expected.tolist() and panel.sort_note == ""


def test_connectivity_keeps_the_users_view_of_a_pooled_matrix_across_posteriors(qtbot):
    from gui.panels.connectivity import MAX_SHOWN

    panel = ConnectivityPanel()
    qtbot.addWidget(panel)
    store = LiveStore()
    m = MAX_SHOWN + 88  # pooled by blocks of 2: 300 rows drawn, not MAX_SHOWN
    rng = np.random.default_rng(2)
    for _ in range(2):
        p = rng.random((m, m)).astype(np.float32)
        store.add(Message("posterior", {"marginals": p, "ids": np.arange(m, dtype=np.int32)}))
        panel.refresh(store)
        if _ == 0:
            view = panel.items[0].getViewBox()
            view.setRange(xRange=(10, 50), yRange=(10, 50), padding=0)  # the user zooms in
            zoomed = view.viewRange()
    assert view.viewRange() == zoomed


def test_behaviour_panel_copies_only_new_camera_rows_and_keeps_r_between_frames(qtbot, store):
    panel = BehaviourPanel(corr_frames=50)
    qtbot.addWidget(panel)
    panel.refresh(store)
    r, seen = panel._r, panel._camera_seen
    assert seen == store.behaviour.total and len(panel.camera_curve.getData()[0]) > 0
    t = int(store.behaviour.t_ns[(seen - 1) % store.camera_capacity]) + 1_000_000
    store.add(Message("behaviour", {"angles": np.zeros(S, np.float32)},
                      {"cum_angle": 0.25, "vigour": 0.0}, frame=999, t_acq_ns=t))
    panel.refresh(store)
    assert panel._r is r  # no new tail or decoded frame: r is not recomputed
    assert panel._camera_seen == seen + 1
    x, y = panel.camera_curve.getData()
    assert x[-1] == 0.0 and y[-1] == pytest.approx(np.degrees(0.25))
