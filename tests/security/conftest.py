"""Fixtures of the security tests: an in-process fake model server (counts the calls that reach
it); the live stack (real model server + gunicorn gateway) comes from tests/conftest.py
(``live_stack``), or, with ``SECURITY_STACK="<gateway url> <model server REST url> <gRPC target>"``,
is a stack that is already running (e.g. ``make serve``: fuzz it without starting another)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.fake_modelserver import FakeModelServer


@pytest.fixture(scope="session")
def fake_backend() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    try:
        yield server
    finally:
        server.stop()


if os.environ.get("SECURITY_STACK"):

    @pytest.fixture(scope="session")
    def live_stack():
        from tests.conftest import LiveStack

        gateway_url, rest_url, grpc_target = os.environ["SECURITY_STACK"].split()
        return LiveStack(grpc_target, gateway_url, Path("models"), rest_url)
