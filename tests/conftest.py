"""Shared fixtures: real sockets on random ports, closed in teardown; Qt offscreen."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import pytest

from rig.bus import Proxy


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.close()
