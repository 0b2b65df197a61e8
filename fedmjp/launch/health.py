"""Waiting for a SuperLink or SuperNode to answer on its ``/health`` endpoint."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import httpx

from .flwr_cli import FlowerError


def wait_healthy(url: str, timeout: float, check: Callable[[], None] = lambda: None,
                 verify: ssl.SSLContext | bool = True) -> None:
    """Poll a SuperLink's or SuperNode's ``/health`` until it answers; ``check`` may raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        try:
            if httpx.get(url, timeout=0.5, verify=verify).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise FlowerError(f"{url} did not become healthy in {timeout:.0f} s")
