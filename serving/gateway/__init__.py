"""The HTTP gateway: images / pixels / house features -> TF Serving gRPC -> JSON answers.

Never imports tensorflow (a test checks it).

``create_app`` and ``GatewayConfig`` are imported on first use: gunicorn's master imports
``serving.gateway.workers`` (the worker classes) before it forks, and must not load the app's
modules (Flask, gRPC, prometheus_client) that each worker imports after the fork.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.gateway.app import create_app
    from serving.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from serving.gateway.app import create_app

        return create_app
    if name == "GatewayConfig":
        from serving.gateway.config import GatewayConfig

        return GatewayConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
