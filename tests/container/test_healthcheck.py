"""docker/healthcheck.py, the images' HEALTHCHECK, against a local HTTP server."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
spec = importlib.util.spec_from_file_location("docker_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(spec)
sys.modules["docker_healthcheck"] = healthcheck
spec.loader.exec_module(healthcheck)

ROUTES: dict[str, tuple[int, bytes]] = {
    "/healthz": (200, b'{"status": "ok"}'),
    "/down": (503, b'{"error": "down"}'),
    "/v1/models/ready": (
        200,
        json.dumps({"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}).encode(),
    ),
    "/v1/models/loading": (
        200,
        json.dumps({"model_version_status": [{"version": "1", "state": "LOADING"}]}).encode(),
    ),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = ROUTES.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_2xx_is_healthy(base_url):
    assert healthcheck.main([f"{base_url}/healthz"]) == 0


def test_error_status_is_unhealthy_with_a_reason(base_url, capsys):
    assert healthcheck.main([f"{base_url}/down"]) == 1
    assert "503" in capsys.readouterr().err


def test_model_available(base_url):
    assert healthcheck.main(["--model-available", f"{base_url}/v1/models/ready"]) == 0


def test_model_still_loading_is_unhealthy(base_url, capsys):
    assert healthcheck.main(["--model-available", f"{base_url}/v1/models/loading"]) == 1
    assert "LOADING" in capsys.readouterr().err


def test_not_a_model_status_is_unhealthy(base_url):
    assert healthcheck.main(["--model-available", f"{base_url}/healthz"]) == 1


def test_connection_refused_is_unhealthy(capsys):
    assert healthcheck.main(["http://127.0.0.1:9/healthz"]) == 1
    assert "failed" in capsys.readouterr().err
