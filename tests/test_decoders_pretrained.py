"""Real pretrained backbones from the installed wheels (slow: the first load de-quantises
SmolLM2 into the backbone cache, 20-80 s on 2 cores; later loads read the cache in seconds)."""
import numpy as np
import pytest
import torch

from decoders.backbone import BackboneSpec, load
from decoders.stream import StreamingDecoder
from decoders.synthetic import make_session
from decoders.train import fit

pytestmark = pytest.mark.slow


def test_smollm2_loads_from_the_wheel_and_differs_from_its_random_twin():
    pre, h = load(BackboneSpec("smollm2", True))
    rnd, h2 = load(BackboneSpec("smollm2", False, seed=0))
    assert h == h2 == 576 and pre.config.num_hidden_layers == 30
    a, b = pre.state_dict(), rnd.state_dict()
    assert a.keys() == b.keys()
    w = "layers.0.mlp.down_proj.weight"
    assert a[w].shape == b[w].shape and not torch.allclose(a[w], b[w])
    # text-pretrained token embeddings are not i.i.d. noise: rows correlate far above chance
    # (rows from 10: the random twin zeroes its padding row, whose correlation is undefined)
    with torch.no_grad():
        c_pre = torch.corrcoef(pre.get_input_embeddings().weight[10:510]).abs().mean()
        c_rnd = torch.corrcoef(rnd.get_input_embeddings().weight[10:510]).abs().mean()
    assert c_pre > 2 * c_rnd


def test_minilm_loads_as_a_bert_encoder():
    m, h = load(BackboneSpec("minilm", True))
    assert h == 384 and m.config.model_type == "bert"


@pytest.fixture
def two_threads():
    """torch threads are process-wide: set 2 for one test, then restore what the next expects."""
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(prev)


@pytest.mark.timeout(600)  # the first load of the suite may convert the GGUF file
def test_smollm2_is_converted_once_into_the_cache_and_loads_from_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))
    first, _ = load(BackboneSpec("smollm2", True, layers=2))
    (folder,) = (tmp_path / "backbones").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again, _ = load(BackboneSpec("smollm2", True, layers=2))
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # read, not rewritten
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.timeout(600)  # the first load of the suite may convert the GGUF file
def test_smollm2_decoder_streams_equal_to_offline(tmp_path, two_threads):
    # 4 of the 30 blocks and a short session: the streaming scheme, not the depth, is tested
    s = make_session(n_frames=60, n_neurons=50, seed=6)
    dec, _ = fit([s], model="smollm2", pretrained=True, window=4, screen=8, epochs=1,
                 layers=4, lags=2, out=tmp_path / "dec")
    off = dec.predict(s.traces)
    st = StreamingDecoder(dec)
    on = np.stack([st.push(x) for x in s.traces])
    assert np.abs(on - off).max() <= 1e-4
    # a frozen pretrained backbone is not copied into the folder: maps, heads, linear path
    from safetensors import safe_open

    with safe_open(str(tmp_path / "dec" / "weights.safetensors"), "pt") as f:
        kept = {k.split(".")[0] for k in f.keys()}
    assert kept == {"input_maps", "heads", "linear"}
    assert (tmp_path / "dec" / "weights.safetensors").stat().st_size < 3_000_000  # the 4 blocks alone: ~55 MB
