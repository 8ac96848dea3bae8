"""Argument types for the ``rig`` subcommands: each names the valid range when it refuses."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be an integer >= 1")
    return value


def nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be an integer >= 0")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def float_in(low: float, high: float, low_open: bool = False):
    """A type accepting low <= x < high (low < x < high with ``low_open``)."""
    bracket = "(" if low_open else "["

    def check(text: str) -> float:
        value = float(text)
        if not ((low < value) if low_open else (low <= value)) or not value < high:
            raise argparse.ArgumentTypeError(f"{text}: must be in {bracket}{low:g}, {high:g})")
        return value

    return check
