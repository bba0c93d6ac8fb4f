"""The HTTP gateway: images / pixels / house features -> TF Serving gRPC -> JSON answers.

Never imports tensorflow (a test checks it).
"""

from serving.gateway.app import create_app
from serving.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]
