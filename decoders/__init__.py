"""Decode tail movement from brain-wide activity with pretrained language models, causally.

``backbone`` loads a transformer (pretrained or its random-init twin), ``model`` holds the
decoder (screen -> causal normalisation -> input map -> backbone -> head), ``train`` fits it on
sessions, ``stream`` runs it frame by frame (online == offline), ``online`` fits a frozen-
backbone ridge decoder during a run, ``baselines`` (lagged ridge, GRU), ``evaluate``
(RMSE, r, R², chance, bout F1, paired tests), ``salience`` (gradient attribution), ``node``
(the bus node) and ``commands`` (``rig train|eval|salience``).
"""

# What `rig train` does with no options (and `fit`'s defaults), picked by the table of
# `python -m benchmarks.decoder_eval` (docs/decoder_eval.md): on 2 CPU cores a few blocks and a
# short window decoded as well as more, and the linear path (lagged ridge, `lags`) keeps the
# decoder at least as good as ridge on validation frames. Kept here, light, for the CLI.
DEFAULTS = dict(model="smollm2", window=8, layers=2, screen=64, lags=4, embed_hidden=256,
                noise=0.5, lr=1e-3, epochs=30, patience=8, batch=32)
