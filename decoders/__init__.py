"""Decode tail movement from brain-wide activity with pretrained language models, causally.

``backbone`` loads a transformer (pretrained or its random-init twin), ``model`` holds the
decoder (screen -> causal normalisation -> input map -> backbone -> head), ``train`` fits it on
sessions, ``stream`` runs it frame by frame (online == offline), ``online`` fits a frozen-
backbone ridge decoder during a run, ``baselines`` (lagged ridge, GRU), ``evaluate``
(RMSE, r, R², chance, bout F1, paired tests), ``salience`` (gradient attribution), ``node``
(the bus node) and ``commands`` (``rig train|eval|salience``).
"""
