"""The online (warm-up fitted) decoder and the Decoder node, driven in-process."""
import numpy as np
import pytest
import torch

from decoders.node import Decoder as DecoderNode
from decoders.evaluate import RunningPearson
from decoders.online import OnlineRidgeDecoder
from decoders.synthetic import make_session
from decoders.train import fit
from rig.bus import Endpoints
from rig.messages import Message
from rig.node import NodeSpec
from tests import naive_decoders as naive

torch.set_num_threads(1)


class Collect:
    """Stands in for the node's publisher: keeps what would go on the bus."""

    def __init__(self):
        self.sent = []

    def publish(self, topic, arrays=None, meta=None, frame=-1, t_acq_ns=0):
        self.sent.append(Message(topic, dict(arrays or {}), dict(meta or {}), frame, t_acq_ns))


def make_node(tmp_path, **settings):
    spec = NodeSpec("decoder", "decoders.node:Decoder", settings, Endpoints("", "", ""),
                    str(tmp_path))
    pub = Collect()
    node = DecoderNode(spec, pub)
    node.setup()
    return node, pub


@pytest.fixture(scope="module")
def session():
    return make_session(n_frames=360, n_neurons=100, n_motor=8, seed=3)


def test_running_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    p, y = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    s = RunningPearson(2)
    for a, b in zip(p, y):
        s.add(a, b)
    expect = [naive.pearson(p[:, i], y[:, i]) for i in range(2)]
    np.testing.assert_allclose(s.r(), expect, atol=1e-9)


def test_online_decoder_waits_for_warmup_then_decodes_held_out_frames(session):
    dec = OnlineRidgeDecoder(session.n_neurons, "tiny-llama", pretrained=False, window=8,
                             screen=16, warmup=120, refit_every=40)
    score = RunningPearson(session.tail.shape[1])
    first = None
    for f, (x, y) in enumerate(zip(session.traces, session.tail)):
        pred = dec.push(f, x)
        if pred is None:
            assert not dec.ready
        else:
            first = first if first is not None else f
            score.add(pred, y)  # scored before its label is given: held out
        dec.label(f, y)
    assert first == 120 and dec.n_fits >= 5
    assert dec.ring.shape == (8, 16) and dec.norm.mean.shape == (16,)  # screened neurons only
    assert len(set(dec.screen) & set(session.truth["motor"])) >= 6
    assert np.nanmean(score.r()) > 0.3


def test_node_publishes_decoded_for_every_frame_with_its_time_and_scores_it(tmp_path, session):
    node, pub = make_node(tmp_path, backbone="tiny-llama", pretrained=False, window=8, screen=16,
                          warmup_frames=100, refit_every=50)
    for f, (x, y) in enumerate(zip(session.traces, session.tail)):
        t = 1_000_000 * (f + 1)
        node.on_message(Message("traces", {"dff": x}, {}, f, t))
        node.on_message(Message("tail", {"angles": y}, {}, f, t))
    out = [m for m in pub.sent if m.topic == "decoded"]
    assert [m.frame for m in out] == list(range(session.n_frames))
    assert all(m.t_acq_ns == 1_000_000 * (m.frame + 1) for m in out)
    assert all(m["pred"].dtype == np.float32 and m["pred"].shape == (6,) for m in out[101:])
    assert not any(m.meta["ready"] or m.meta["moving"] for m in out[:100])
    assert any(m.meta["moving"] for m in out[100:]) and not all(m.meta["moving"] for m in out[100:])
    summary = node.summary()
    assert summary["scored_frames"] == session.n_frames - 100 and summary["decoding_r"] > 0.3
    assert node.stats()["ready"]


def test_node_streams_a_trained_decoder_folder_equal_to_offline(tmp_path, session):
    dec, _ = fit([session], model="tiny-gpt2", pretrained=False, window=6, screen=12, epochs=2,
                 out=tmp_path / "dec")
    node, pub = make_node(tmp_path, decoder=str(tmp_path / "dec"))
    for f, x in enumerate(session.traces[:50]):
        node.on_message(Message("traces", {"dff": x}, {}, f, f))
    online = np.stack([m["pred"] for m in pub.sent if m.topic == "decoded"])
    assert np.abs(online - dec.predict(session.traces[:50])).max() <= 1e-4


def test_node_scores_a_horizon_decoder_against_the_tail_it_predicts(tmp_path, session):
    fit([session], model="tiny-gpt2", pretrained=False, window=6, screen=12, epochs=1,
        horizon=2, out=tmp_path / "dec")
    node, pub = make_node(tmp_path, decoder=str(tmp_path / "dec"))
    for f, (x, y) in enumerate(zip(session.traces[:50], session.tail[:50])):
        node.on_message(Message("traces", {"dff": x}, {}, f, f))
        node.on_message(Message("tail", {"angles": y}, {}, f, f))
    pred = np.stack([m["pred"] for m in pub.sent if m.topic == "decoded"])
    expect = RunningPearson(session.tail.shape[1])
    for p, y in zip(pred[:48], session.tail[2:50]):  # frame t predicts the tail at t + 2
        expect.add(p, y)
    assert node.scorer.n == 48
    np.testing.assert_allclose(node.scorer.r(), expect.r(), atol=1e-9)


def test_a_prediction_and_label_of_different_shapes_is_not_scored_and_warned_once(
        tmp_path, caplog):
    node, _ = make_node(tmp_path, backbone="tiny-llama", pretrained=False)
    for f in range(3):
        node._pair(f, pred=np.zeros(6, np.float32))
        node._pair(f, label=np.zeros(3))
    assert node.scorer is None
    assert [r.levelname for r in caplog.records if "not scored" in r.getMessage()] == ["WARNING"]


def test_label_arriving_before_its_frame_is_still_scored(tmp_path, session):
    node, _ = make_node(tmp_path, backbone="tiny-llama", pretrained=False, window=4, screen=8,
                        warmup_frames=20, refit_every=10)
    for f in range(60):
        node.on_message(Message("tail", {"angles": session.tail[f]}, {}, f, f))
        node.on_message(Message("traces", {"dff": session.traces[f]}, {}, f, f))
    assert node.summary()["scored_frames"] >= 60 - 21
    # label-first pairs count towards refits too: frame 0's label comes before the online
    # decoder exists (it is built at the first frame), so frames 1..20 fit, 21..59 refit 3 times
    assert node.online.n_fits > 1 and node.online.n_fits == 4


def test_bad_settings_are_refused_with_the_field_named(tmp_path):
    with pytest.raises(ValueError, match="warmup_frames=5"):
        make_node(tmp_path, warmup_frames=5)


def test_online_head_can_also_read_lagged_inputs(session):
    dec = OnlineRidgeDecoder(session.n_neurons, "tiny-llama", pretrained=False, window=6,
                             screen=10, warmup=40, refit_every=20, head_lags=3)
    for f, (x, y) in enumerate(zip(session.traces[:80], session.tail[:80])):
        pred = dec.push(f, x)
        dec.label(f, y)
    assert pred.shape == (6,) and dec.coef.shape == (32 + 3 * 10, 6)
    with pytest.raises(ValueError, match="head_lags=9"):
        OnlineRidgeDecoder(10, "tiny-llama", pretrained=False, window=6, head_lags=9)


def test_a_repeated_label_for_a_frame_is_counted_once(session):
    dec = OnlineRidgeDecoder(session.n_neurons, "tiny-llama", pretrained=False, window=4,
                             screen=8, warmup=30, refit_every=10)
    for f in range(20):
        dec.push(f, session.traces[f])
        dec.label(f, session.tail[f])
        dec.label(f, session.tail[f] + 1.0)
    assert dec._stats[0] == 20 and not dec.ready


def test_first_fit_batches_the_warmup_windows_and_gives_the_live_features(session):
    dec = OnlineRidgeDecoder(session.n_neurons, "tiny-llama", pretrained=False, window=6,
                             screen=10, warmup=20, refit_every=10, head_lags=2)
    for f in range(20):
        dec.push(f, session.traces[f])
        dec.label(f, session.tail[f])
    assert dec.ready
    z = np.random.default_rng(0).normal(size=(150, 10)).astype(np.float32)
    one_by_one = np.concatenate([dec._features(z[None, max(0, t - 5):t + 1]) for t in range(150)])
    # batched and single-window forwards differ only by float32 round-off
    np.testing.assert_allclose(dec._window_features(z, batch=64), one_by_one, atol=1e-5)


def test_ablation_is_the_same_head_without_the_backbone_features(session):
    """Two online decoders with different backbones: different predictions, the same
    ablation (it never reads the backbone), both held out."""
    runs = []
    for seed in (0, 1):
        dec = OnlineRidgeDecoder(session.n_neurons, "tiny-llama", pretrained=False, window=6,
                                 screen=10, warmup=40, refit_every=20, head_lags=2, seed=seed)
        preds, ablations = [], []
        for f, (x, y) in enumerate(zip(session.traces[:100], session.tail[:100])):
            pred = dec.push(f, x)
            if pred is not None:
                preds.append(pred)
                ablations.append(dec.ablation_pred)
            dec.label(f, y)
        runs.append((np.stack(preds), np.stack(ablations)))
    (p0, a0), (p1, a1) = runs
    assert not np.allclose(p0, p1)
    np.testing.assert_allclose(a0, a1, atol=1e-6)
    # the ablation head reads the last 2 frames' screened inputs: 2 x 10 features
    assert dec._heads["ablation"][2].shape == (2 * 10, 6)


def test_node_reports_live_r_with_and_without_the_llm_and_its_phase(tmp_path, session):
    node, _ = make_node(tmp_path, backbone="tiny-llama", pretrained=False, window=4, screen=8,
                        warmup_frames=40, refit_every=20, head_lags=2)
    assert node.stats()["phase"] == "fitting" and node.stats()["load_s"] >= 0
    for f in range(150):
        node.on_message(Message("traces", {"dff": session.traces[f]}, {}, f, f))
        node.on_message(Message("tail", {"angles": session.tail[f]}, {}, f, f))
    stats, summary = node.stats(), node.summary()
    assert stats["phase"] == "ready" and stats["ready"]
    assert np.isfinite(stats["r"]) and np.isfinite(stats["r_without_llm"])
    assert summary["decoding_r_without_llm"] == stats["r_without_llm"]
    assert "without_llm" in summary["note"]


def test_trained_decoder_node_scores_its_linear_path_as_the_ablation(tmp_path, session):
    dec, _ = fit([session], model="tiny-llama", pretrained=False, window=4, screen=8,
                 epochs=1, lags=2, out=tmp_path / "dec")
    node, _ = make_node(tmp_path, decoder=str(tmp_path / "dec"))
    assert node.stats()["phase"] == "ready"
    x, y = session.traces[:80], session.tail[:80]
    for f in range(80):
        node.on_message(Message("traces", {"dff": x[f]}, {}, f, f))
        node.on_message(Message("tail", {"angles": y[f]}, {}, f, f))
    expect = RunningPearson(y.shape[1])
    for p, t in zip(dec.predict(x, path="linear"), y):
        expect.add(p, t)
    np.testing.assert_allclose(node.ablation_scorer.r(), expect.r(), atol=1e-4)
