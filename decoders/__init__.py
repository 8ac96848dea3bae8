"""Decode tail movement from brain-wide activity with pretrained language models, causally.

``backbone`` loads a transformer (pretrained or its random-init twin), ``model`` holds the
decoder (screen -> causal normalisation -> input map -> backbone -> head), ``train`` fits it on
sessions, ``stream`` runs it frame by frame (online == offline), ``online`` fits a frozen-
backbone ridge decoder during a run, ``baselines`` (lagged ridge, GRU), ``evaluate``
(RMSE, r, R², chance, bout F1, paired tests), ``salience`` (gradient attribution), ``node``
(the bus node) and ``commands`` (``rig train|eval|salience``).
"""

# What `rig train` does with no options (and `fit`'s defaults), picked by the table of
# `python -m benchmarks.decoder_eval` and the routes of `benchmarks.decoder_routes`
# (docs/decoder_eval.md): on 2 CPU cores a few blocks and a short window decoded as well as
# more; the per-frame MLP embedding and input noise (sd 0.5 beat 0.25 and 1) let the frozen
# backbone generalise; each token also carries the change since the frame before (`onsets`:
# calcium rises are what attention over 8 frames found hardest to read); a random gain per
# neuron and window (`gain`, sd 0.3 beat 0.5) prepares it for the test part's drifted gains;
# three members (embeddings and heads on the one backbone) average away the seed's luck; the
# linear path (lagged ridge, `lags`), mixed in by validation, keeps the decoder at least as
# good as ridge on validation frames. Kept here, light, for the CLI.
DEFAULTS = dict(model="smollm2", window=8, layers=2, screen=64, lags=4, embed_hidden=256,
                onsets=True, noise=0.5, gain=0.3, members=3, lr=3e-3, epochs=20, patience=6,
                batch=32)
