"""Decoder model, training and streaming on tiny in-memory backbones."""
import json
import shutil

import numpy as np
import pytest
import torch

from decoders.backbone import BackboneError, BackboneSpec, _truncate, cached, load
from decoders.baselines import lagged
from decoders.model import (CausalNorm, Decoder, DecoderConfig, LaggedLinear, VAR_EPS,
                            screen_neurons, screen_scores)
from decoders.stream import StreamingDecoder
from decoders.synthetic import make_session
from decoders.train import fit, split_frames
from tests import naive_decoders as naive

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def session():
    return make_session(n_frames=400, n_neurons=120, n_motor=8, seed=1)


@pytest.fixture(scope="module")
def trained(session, tmp_path_factory):
    out = tmp_path_factory.mktemp("dec")
    # lags=0: the transformer alone, so that training (not a ridge start) must do the decoding
    dec, record = fit([session], model="tiny-llama", pretrained=False, window=8, screen=16,
                      epochs=4, lr=3e-3, lags=0, out=out)
    return dec, record, out


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert", "gru-16"])
def test_online_predictions_equal_offline_within_1e_4(session, name):
    # Untrained weights are enough: equality is a property of the streaming scheme. W=6 < T
    # so the ring wraps many times; the first W-1 frames use their shorter windows.
    dec, _ = fit([session], model=name, pretrained=False, window=6, screen=10, epochs=1)
    offline = dec.predict(session.traces)
    stream = StreamingDecoder(dec)
    online = np.stack([stream.push(x) for x in session.traces])
    # 1e-4 is the bound; batching only reorders float32 sums (~1e-6 seen).
    assert np.abs(online - offline).max() <= 1e-4


def test_offline_prediction_matches_frame_by_frame_naive(trained, session):
    dec, _, _ = trained
    z = dec.normalise(session.traces[:40])
    slow = naive.window_predict(dec.net, z, dec.config.window) * dec.y_std + dec.y_mean
    np.testing.assert_allclose(dec.predict(session.traces[:40]), slow, atol=1e-5)


def test_prediction_of_a_frame_ignores_later_frames(trained, session):
    dec, _, _ = trained
    full = dec.predict(session.traces[:60])
    spoiled = session.traces[:60].copy()
    spoiled[40:] = 1e3
    np.testing.assert_array_equal(dec.predict(spoiled)[:40], full[:40])


def test_running_norm_matches_explicit_weighted_statistics():
    x = np.random.default_rng(0).normal(2.0, 3.0, (30, 4))
    norm = CausalNorm("running", 7.0, np.zeros(4), np.ones(4))
    np.testing.assert_allclose(norm.run(x), naive.running_norm(x, 7.0, VAR_EPS), atol=1e-5)


def test_running_norm_removes_slow_gain_drift():
    rng = np.random.default_rng(0)
    gain = np.linspace(1.0, 5.0, 3000)[:, None]
    norm = CausalNorm("running", 200.0, np.zeros(1), np.ones(1))
    z = norm.run(gain * rng.normal(0, 1, (3000, 1)))
    assert 0.8 < z[-500:].std() < 1.2 and 0.8 < z[1000:1500].std() < 1.2


def test_training_decodes_tail_better_than_chance(trained, session):
    dec, record, _ = trained
    sp = split_frames(session.n_frames)
    pred = dec.predict(session.traces)[sp.test[0]:]
    true = session.tail[sp.test[0]:]
    assert naive.pearson(pred[:, -1], true[:, -1]) > 0.3
    assert record["best_val_loss"] < record["epochs"][0]["val_loss"]


def test_screening_uses_training_frames_and_finds_motor_neurons(trained, session):
    dec, _, _ = trained
    assert len(set(dec.screen) & set(session.truth["motor"])) >= 6
    sp = split_frames(session.n_frames)
    expect = screen_neurons(session.traces[:sp.train[1]].astype(np.float64),
                            session.tail[:sp.train[1]], 16)
    np.testing.assert_array_equal(dec.screen, expect)


def test_screen_scores_are_each_neurons_best_abs_pearson_with_tail_or_vigour(session):
    x, tail = session.traces[:200].astype(np.float64), session.tail[:200]
    targets = np.concatenate([tail, np.abs(tail).mean(1, keepdims=True)], 1)
    expect = [max(abs(naive.pearson(x[:, i], t)) for t in targets.T) for i in range(x.shape[1])]
    # rtol: screen_scores floors each sd at +1e-12 (silent neurons score 0, not nan); a
    # quiet neuron's r moves in the 7th digit
    np.testing.assert_allclose(screen_scores(x, tail), expect, rtol=1e-6)


def test_saved_decoder_reloads_without_training_data(trained, session):
    dec, _, out = trained
    doc = json.loads((out / "decoder.json").read_text())
    assert doc["n_neurons"] == 120 and doc["norm"] == "running"
    assert doc["backbone"]["name"] == "tiny-llama"
    assert (out / "metrics.jsonl").read_text().count("\n") >= 2
    again = Decoder.load(out)
    x = session.traces[:50]
    np.testing.assert_array_equal(again.predict(x), dec.predict(x))


def test_a_saved_backbone_is_loaded_from_the_file_and_must_be_complete(trained, session,
                                                                        tmp_path):
    from safetensors.torch import load_file, save_file

    dec, _, out = trained
    shutil.copytree(out, tmp_path / "full")
    doc = json.loads((tmp_path / "full" / "decoder.json").read_text())
    # as if fully fine-tuned from pretrained weights: the file holds the whole backbone, so
    # load() must not fetch pretrained weights (a tiny backbone has none: that would raise)
    doc["backbone"]["pretrained"], doc["finetune"] = True, "full"
    (tmp_path / "full" / "decoder.json").write_text(json.dumps(doc))
    again = Decoder.load(tmp_path / "full")
    x = session.traces[:30]
    np.testing.assert_array_equal(again.predict(x), dec.predict(x))
    weights = tmp_path / "full" / "weights.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if not k.startswith("backbone.")}, str(weights))
    with pytest.raises(ValueError, match="does not match decoder.json"):
        Decoder.load(tmp_path / "full")


def test_wrong_neuron_count_is_refused_with_the_expected_count(trained):
    dec, _, _ = trained
    with pytest.raises(ValueError, match="120 neurons"):
        dec.predict(np.zeros((10, 7), np.float32))
    with pytest.raises(ValueError, match=r"\(120,\)"):
        StreamingDecoder(dec).push(np.zeros(7))


def test_random_init_twin_has_same_architecture_and_other_weights():
    a, _ = load(BackboneSpec("tiny-llama", False, 0))
    b, _ = load(BackboneSpec("tiny-llama", False, 1))
    c, _ = load(BackboneSpec("tiny-llama", False, 0))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    w = "layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sa[w], sb[w]) and torch.equal(sa[w], sc[w])


@pytest.mark.parametrize("spec, match", [
    (BackboneSpec("tiny-llama", True), "no pretrained weights"),
    (BackboneSpec("/no/such/folder", True), "cannot read its config"),
    (BackboneSpec("gru", True), "baseline"),
])
def test_bad_backbone_specs_name_the_fix(spec, match):
    with pytest.raises(BackboneError, match=match):
        load(spec)


@pytest.mark.parametrize("kw, match", [
    (dict(norm="zscore"), "norm"), (dict(window=0), "window"), (dict(finetune="adapters"), "finetune"),
    (dict(members=0), "members")])
def test_bad_decoder_config_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        DecoderConfig(n_neurons=3, n_outputs=1, **kw)


def test_split_is_time_ordered_and_refuses_tiny_sessions():
    sp = split_frames(100)
    assert sp.train == (0, 70) and sp.val == (70, 80) and sp.test == (80, 100)
    with pytest.raises(ValueError, match="too short"):
        split_frames(3)
    with pytest.raises(ValueError, match="summing to 1"):
        split_frames(100, (0.5, 0.5, 0.5))


def test_prediction_from_a_start_frame_equals_the_full_prediction_there(trained, session):
    dec, _, _ = trained
    full = dec.predict(session.traces[:80])
    for start in (0, 3, 40):
        part = dec.predict(session.traces[:80], start=start)
        assert np.isnan(part[:start]).all()
        np.testing.assert_allclose(part[start:], full[start:], atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_truncated_backbone_keeps_the_first_blocks_unchanged(name):
    full, h = load(BackboneSpec(name, False, 0))
    fs = {k: v.clone() for k, v in full.state_dict().items()}
    _truncate(full, 1)  # what loading pretrained weights with layers=1 does
    ss = full.state_dict()
    assert len(ss) < len(fs) and all(torch.equal(ss[k], fs[k]) for k in ss)
    # a random-init twin is built with the kept blocks only (no 30-block init to throw away)
    short, _ = load(BackboneSpec(name, False, 0, layers=1))
    assert short.state_dict().keys() == ss.keys()
    assert short(inputs_embeds=torch.randn(1, 3, h)).last_hidden_state.shape == (1, 3, h)
    with pytest.raises(BackboneError, match="use 1..2"):
        load(BackboneSpec(name, False, 0, layers=5))


def test_lora_trains_adapters_only_and_reloads_equal(session, tmp_path):
    pytest.importorskip("peft")
    base, _ = load(BackboneSpec("tiny-llama", False, 0))
    dec, _ = fit([session], model="tiny-llama", pretrained=False, window=6, screen=10,
                 epochs=2, lr=3e-3, finetune="lora", out=tmp_path)
    trainable = {k for k, p in dec.net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k or not k.startswith("backbone.") for k in trainable)
    # The base weights did not move; the adapters did.
    before = dict(base.named_parameters())
    compared = 0
    for name, p in dec.net.backbone.named_parameters():
        plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if "lora_" not in name:
            torch.testing.assert_close(p, before[plain])
            compared += 1
    assert compared == len(before)
    again = Decoder.load(tmp_path)
    x = session.traces[:40]
    np.testing.assert_allclose(again.predict(x), dec.predict(x), atol=1e-6)
    stream = StreamingDecoder(again)
    online = np.stack([stream.push(f) for f in x])
    assert np.abs(online - dec.predict(x)).max() <= 1e-4


def test_linear_path_is_lagged_ridge_design_times_weights(session):
    z = np.random.default_rng(0).normal(size=(2, 7, 5)).astype(np.float32)
    lin = LaggedLinear(5, 3, lags=3)
    with torch.no_grad():
        lin.weight.normal_()
        lin.bias.normal_()
        got = lin(torch.as_tensor(z)).numpy()
    for b in range(2):
        expect = lagged(z[b], 3) @ lin.weight.detach().numpy() + lin.bias.detach().numpy()
        np.testing.assert_allclose(got[b], expect, atol=1e-5)


def _val_mse(dec, session, path):
    from decoders.train import split_frames

    va = split_frames(len(session.traces)).val
    pred = dec.predict(session.traces[:va[1]], path=path)[va[0]:]
    return float((((pred - session.tail[va[0]:va[1]]) / dec.y_std) ** 2).mean())


def test_linear_path_is_ridge_mixed_by_validation_never_worse_and_streams_equal(session):
    kw = dict(model="tiny-llama", pretrained=False, window=6, screen=10, lags=3)
    start, _ = fit([session], epochs=0, **kw)
    trained, _ = fit([session], epochs=3, lr=3e-3, **kw)
    # the linear path is the closed-form lagged ridge, whatever the transformer learns
    torch.testing.assert_close(trained.net.linear.weight, start.net.linear.weight)
    a, b = trained.config.mix
    assert 0 <= a <= 1 and a + b == pytest.approx(1)
    # the share is the best on validation, lagged ridge alone (a = 0) included
    assert _val_mse(trained, session, "all") <= _val_mse(trained, session, "linear") + 1e-6
    x = session.traces[:120]
    np.testing.assert_allclose(
        trained.predict(x), a * trained.predict(x, path="transformer")
        + b * trained.predict(x, path="linear") - (a + b - 1) * trained.y_mean, atol=1e-5)
    stream = StreamingDecoder(trained)
    online, linear = [], []
    for f in x:
        online.append(stream.push(f))
        linear.append(stream.linear_pred)
    assert np.abs(np.stack(online) - trained.predict(x)).max() <= 1e-4
    assert np.abs(np.stack(linear) - trained.predict(x, path="linear")).max() <= 1e-4
    with pytest.raises(ValueError, match="no linear path"):
        fit([session], model="tiny-llama", pretrained=False, window=6, screen=10,
            epochs=0, lags=0)[0].predict(x, path="linear")


def test_transformer_beside_the_linear_path_learns_the_whole_tail(session):
    # It used to learn only what a ridge fit to the same frames left (residuals ~ noise on
    # training frames), so alone it decoded nothing and validation kept the ridge start.
    from decoders.evaluate import score_sessions

    dec, _ = fit([session], model="tiny-llama", pretrained=False, window=6, screen=10,
                 epochs=8, lr=3e-3, lags=3)
    alone = score_sessions(lambda x, st: dec.predict(x, st, path="transformer"), [session])
    assert alone["model"]["r_mean"] > 0.5


def test_members_are_independent_embeddings_and_heads_averaged_streamed_and_reloaded(
        session, tmp_path):
    dec, _ = fit([session], model="tiny-llama", pretrained=False, window=6, screen=10,
                 epochs=2, lr=3e-3, lags=3, members=3, out=tmp_path)
    net = dec.net
    assert len(net.input_maps) == len(net.heads) == 3
    # each member trained from its own start: their weights and predictions differ
    w = [m.weight for m in net.heads]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    z = torch.as_tensor(dec.normalise(session.traces[:40]))[None]
    with torch.no_grad():
        each = net(z, "members")  # (K, B, w, S), one backbone pass for all members
        one = [head(net.backbone(inputs_embeds=m(torch.cat([z, torch.diff(
            z, dim=1, prepend=z[:, :1])], -1))).last_hidden_state)
               for m, head in zip(net.input_maps, net.heads)]
        torch.testing.assert_close(each, torch.stack(one), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net(z, "transformer"), each.mean(0))
    x = session.traces[:120]
    stream = StreamingDecoder(dec)
    assert np.abs(np.stack([stream.push(f) for f in x]) - dec.predict(x)).max() <= 1e-4
    np.testing.assert_allclose(Decoder.load(tmp_path).predict(x), dec.predict(x), atol=1e-6)


@pytest.mark.parametrize("name", ["noise", "gain"])
def test_negative_training_noise_or_gain_is_refused(session, name):
    with pytest.raises(ValueError, match=f"{name}=-0.1"):
        fit([session], model="tiny-llama", pretrained=False, window=6, epochs=0, **{name: -0.1})


def test_backbone_cache_converts_once_and_never_leaves_a_partial_copy(tmp_path):
    calls = []

    def convert(folder):
        calls.append(folder)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text("{}")

    def broken(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached(tmp_path / "smollm2", broken)
    assert list(tmp_path.iterdir()) == []
    assert cached(tmp_path / "smollm2", convert) == tmp_path / "smollm2"
    assert cached(tmp_path / "smollm2", convert) == tmp_path / "smollm2"
    assert len(calls) == 1 and (tmp_path / "smollm2" / "model.safetensors").read_bytes() == \
        b"weights"
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]
