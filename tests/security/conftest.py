"""Fixtures of the security tests: an in-process fake model server (counts the calls that reach
it) and in-process gateway apps; the live stack (real model server + gunicorn gateway) comes from
tests/conftest.py (``live_stack``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.fake_modelserver import FakeModelServer


@pytest.fixture(scope="session")
def fake_backend() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    try:
        yield server
    finally:
        server.stop()
