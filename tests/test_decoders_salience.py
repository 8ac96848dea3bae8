"""Neuron salience: attribution back to inputs finds the tail-carrying neurons."""
import json

import numpy as np
import pytest
import torch

from decoders.salience import attributions, salience, save
from decoders.synthetic import make_session
from decoders.train import fit

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    s = make_session(n_frames=400, n_neurons=60, n_motor=6, seed=4)
    dec, _ = fit([s], model="tiny-llama", pretrained=False, window=6, screen=None, epochs=12,
                 lr=1e-2)
    return dec, s


def test_integrated_gradients_sum_to_output_change(trained):
    dec, s = trained
    z = torch.as_tensor(dec.normalise(s.traces))[100:106][None]
    attr = attributions(dec.net, z, "ig", steps=64)
    with torch.no_grad():
        change = dec.net(z)[:, -1] - dec.net(torch.zeros_like(z))[:, -1]
    # 64 midpoints: Riemann error well under 2% of the change on this smooth network
    np.testing.assert_allclose(attr.sum((1, 2))[0].numpy(), change[0].numpy(), rtol=0.02, atol=2e-3)


@pytest.mark.parametrize("method", ["ig", "grad_x_input"])
def test_top_salient_neurons_are_the_motor_neurons(trained, method):
    dec, s = trained
    scores = salience(dec, s.traces, method=method, steps=4, max_frames=64)
    top = np.argsort(-scores)[:6]
    assert len(set(top) & set(s.truth["motor"])) >= 4


def test_salience_is_saved_with_positions(trained, tmp_path):
    dec, s = trained
    scores = salience(dec, s.traces, method="grad_x_input", max_frames=16)
    path = save(tmp_path / "sal.npz", scores, s.positions, top=5)
    with np.load(path, allow_pickle=False) as f:
        assert f["positions"].shape == (60, 3) and f["rank"][np.argmax(scores)] == 0
    doc = json.loads(path.with_suffix(".json").read_text())
    assert len(doc["top"]) == 5 and doc["top"][0]["neuron"] == int(np.argmax(scores))


def test_bad_salience_arguments_are_refused(trained):
    dec, s = trained
    with pytest.raises(ValueError, match="method"):
        salience(dec, s.traces, method="shap")
    with pytest.raises(ValueError, match="full windows"):
        salience(dec, s.traces, frames=np.array([0]))
