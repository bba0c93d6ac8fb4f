"""deploy/k8s: renders offline, validates against the Kubernetes schemas, keeps its promises."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "docker" / "compose.yaml"


def _load_renderer():
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_render"] = module
    spec.loader.exec_module(module)
    return module


render = _load_renderer()


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in render.render(K8S)}


def _pod(manifests, name: str) -> dict[str, Any]:
    return manifests[("Deployment", name)]["spec"]["template"]["spec"]


def test_every_manifest_validates_against_the_kubernetes_schema(manifests):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for obj in manifests.values():
        # strict: unknown fields (typos) fail too; raises ValidationError naming the problem
        kubernetes_validate.validate(obj, version, strict=True)


def test_configs_are_copies_of_the_serving_configs():
    assert render.config_drift() == [], "run: python deploy/k8s/render.py --sync"


def test_config_map_is_generated_from_the_serving_configs_and_referenced_by_hash(manifests):
    maps = [obj for (kind, _), obj in manifests.items() if kind == "ConfigMap"]
    assert len(maps) == 1
    config_map = maps[0]
    for name in render.SYNCED_CONFIGS:
        assert config_map["data"][name] == (REPO / "serving" / name).read_text()
    volumes = {v["name"]: v for v in _pod(manifests, "tfserving")["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["name"] != "tfserving-config"  # content hash suffix


def test_hash_changes_with_content():
    assert render.config_map_hash({"a": "1"}) != render.config_map_hash({"a": "2"})


def test_tfserving_gets_a_gpu_and_probes_model_status(manifests):
    container = _pod(manifests, "tfserving")["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "/v1/models/fashion_mnist" in probe and "AVAILABLE" in probe
    assert "livenessProbe" in container
    assert "--allow_version_labels_for_unavailable_models=true" in container["args"]
    assert "--enable_batching=true" in container["args"]


def test_tfserving_image_matches_compose():
    compose = yaml.safe_load(COMPOSE.read_text())
    image = compose["services"]["tfserving"]["image"]  # ...:${TF_SERVING_VERSION:-X.Y.Z}-gpu
    version = re.search(r":-([0-9.]+)\}", image).group(1)
    rendered = {
        c["image"]
        for obj in render.render(K8S)
        if obj["kind"] == "Deployment"
        for c in obj["spec"]["template"]["spec"]["containers"]
    }
    assert f"tensorflow/serving:{version}-gpu" in rendered


def test_gateway_has_service_hpa_pdb_and_graceful_shutdown(manifests):
    assert ("Service", "gateway") in manifests
    hpa = manifests[("HorizontalPodAutoscaler", "gateway")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    pdb = manifests[("PodDisruptionBudget", "gateway")]
    deployment = manifests[("Deployment", "gateway")]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MODEL_SERVER_GRPC"].endswith(":8500")
    assert pod["terminationGracePeriodSeconds"] > int(env["GATEWAY_GRACEFUL_TIMEOUT"])
    probes = pod["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_pod_runs_non_root_with_resources(manifests):
    for (kind, name), obj in manifests.items():
        if kind != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(container["resources"]), name


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("patches: []\nresources: []\n")
    with pytest.raises(render.RenderError, match="patches"):
        render.render(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_renderer_matches_kubectl_kustomize(manifests):
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0 and "unknown command" in result.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert result.returncode == 0, result.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout)}
    assert theirs == manifests
