"""Dataset downloads, streamed into place atomically: an interrupted download leaves no partial
file behind (see :func:`molfold.io.atomic_write`)."""

from __future__ import annotations

import shutil
import urllib.request
from functools import partial
from pathlib import Path

from molfold.io import atomic_write

TIMEOUT_S = 60.0
"""Seconds to wait for the server to connect or to send the next block."""


def download(url: str, target: Path, timeout: float = TIMEOUT_S) -> Path:
    """Stream ``url`` into the file ``target`` (parent folders created) and return ``target``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return atomic_write(target, partial(shutil.copyfileobj, response))
