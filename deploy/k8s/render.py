"""Render deploy/k8s like `kubectl kustomize deploy/k8s`, without kustomize or kubectl.

Neither PyPI nor Debian 12 ships kustomize, so CI renders with this: it implements only the
part of kustomize that deploy/k8s/kustomization.yaml uses, and refuses anything else.
  - resources: local YAML files          - namespace
  - labels: pairs (includeSelectors and includeTemplates false)
  - configMapGenerator: files, with kustomize's content-hash name suffix; references to the
    generated ConfigMaps from pod specs are renamed to match
  - images: newName / newTag
When kubectl is installed, tests/container/test_k8s.py checks the output matches kubectl's.

  python deploy/k8s/render.py [DIR]      print the manifests (multi-document YAML)
  python deploy/k8s/render.py --sync     copy serving/*.config into deploy/k8s/config/
  python deploy/k8s/render.py --check    exit 1 when config/ differs from serving/
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SYNCED_CONFIGS = ("models.config", "batching.config", "monitoring.config")
SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "configMapGenerator",
    "images",
}
# Kinds kustomize leaves without a namespace.
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class RenderError(Exception):
    """The kustomization uses something this renderer does not implement, or is invalid."""


def config_map_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix: sha256 of the Go-JSON encoding, 10 hex chars, some remapped.

    kustomize hashes the generated object before it has a name, so the name is "".
    """
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's json.Marshal escapes these; the hash must see the same bytes.
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        encoded = encoded.replace(char, escape)
    encoded = encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    # kustomize avoids "bad words" by remapping vowels and digits that could spell them.
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _generate_config_maps(root: Path, generators: list[dict[str, Any]]) -> list[dict[str, Any]]:
    maps = []
    for gen in generators:
        unknown = set(gen) - {"name", "files"}
        if unknown:
            raise RenderError(
                f"configMapGenerator {gen.get('name')}: unsupported {sorted(unknown)}"
            )
        data = {}
        for entry in gen.get("files", []):
            key, _, rel = entry.partition("=") if "=" in entry else (None, "", entry)
            path = (root / rel).resolve()
            if root not in path.parents:
                raise RenderError(f"{entry}: outside {root} (kustomize refuses it too)")
            data[key or path.name] = path.read_text()
        name = gen["name"]
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-{config_map_hash(data)}"},
                "data": data,
                "_original_name": name,
            }
        )
    return maps


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in POD_TEMPLATE_KINDS:
        return obj.get("spec", {}).get("template", {}).get("spec")
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj.get("kind") == "Pod":
        return obj.get("spec")
    return None


def _rename_config_refs(spec: dict[str, Any], names: dict[str, str]) -> None:
    for volume in spec.get("volumes", []):
        ref = volume.get("configMap")
        if ref and ref.get("name") in names:
            ref["name"] = names[ref["name"]]
        for source in volume.get("projected", {}).get("sources", []):
            ref = source.get("configMap")
            if ref and ref.get("name") in names:
                ref["name"] = names[ref["name"]]
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref and ref.get("name") in names:
                ref["name"] = names[ref["name"]]
        for env_from in container.get("envFrom", []):
            ref = env_from.get("configMapRef")
            if ref and ref.get("name") in names:
                ref["name"] = names[ref["name"]]


def _split_image(image: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', ':tag'); digests and ports in the host are kept apart."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, "@" + digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = image.rpartition(":")
        return name, ":" + tag
    return image, ""


def _set_images(spec: dict[str, Any], images: list[dict[str, str]]) -> None:
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, suffix = _split_image(container["image"])
        for rule in images:
            if rule["name"] != name:
                continue
            new_name = rule.get("newName", name)
            if "digest" in rule:
                suffix = "@" + rule["digest"]
            elif "newTag" in rule:
                suffix = ":" + str(rule["newTag"])
            container["image"] = new_name + suffix


def render(root: Path = HERE) -> list[dict[str, Any]]:
    """The manifests kustomize would build from root/kustomization.yaml."""
    root = root.resolve()
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"kustomization.yaml: this renderer does not implement {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for rel in kustomization.get("resources", []):
        path = (root / rel).resolve()
        if not path.is_file():
            raise RenderError(f"resource {rel}: only local files are supported")
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    config_maps = _generate_config_maps(root, kustomization.get("configMapGenerator", []))
    renamed = {cm.pop("_original_name"): cm["metadata"]["name"] for cm in config_maps}
    objects.extend(config_maps)

    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise RenderError("labels: includeSelectors/includeTemplates are not implemented")
        labels.update(entry.get("pairs", {}))
    namespace = kustomization.get("namespace")

    out = []
    for original in objects:
        obj = copy.deepcopy(original)
        meta = obj.setdefault("metadata", {})
        if labels:
            meta["labels"] = {**meta.get("labels", {}), **labels}
        if namespace and obj.get("kind") not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        spec = _pod_spec(obj)
        if spec is not None:
            _rename_config_refs(spec, renamed)
            _set_images(spec, kustomization.get("images", []))
        out.append(obj)
    return out


def config_drift() -> list[str]:
    """Names of config/ copies that differ from (or lack) serving/<name>."""
    return [
        name
        for name in SYNCED_CONFIGS
        if not (HERE / "config" / name).is_file()
        or (HERE / "config" / name).read_bytes() != (REPO / "serving" / name).read_bytes()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=str(HERE))
    parser.add_argument("--sync", action="store_true", help="copy serving/*.config to config/")
    parser.add_argument("--check", action="store_true", help="fail when config/ has drifted")
    args = parser.parse_args(argv)
    if args.sync:
        (HERE / "config").mkdir(exist_ok=True)
        for name in SYNCED_CONFIGS:
            shutil.copyfile(REPO / "serving" / name, HERE / "config" / name)
        return 0
    if args.check:
        drift = config_drift()
        if drift:
            print(
                f"deploy/k8s/config differs from serving/ for {', '.join(drift)}; "
                "run: python deploy/k8s/render.py --sync",
                file=sys.stderr,
            )
            return 1
        return 0
    try:
        docs = render(Path(args.dir))
    except (RenderError, OSError, yaml.YAMLError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
