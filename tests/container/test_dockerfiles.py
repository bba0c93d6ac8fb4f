"""docker/*.Dockerfile: hadolint-clean, parameterised base image, pinned dependencies."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _tool(name: str) -> str:
    """A tool from the `containers` extra: next to this interpreter, else on PATH."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} missing: pip install -e '.[containers]'")
    return found


def test_there_are_dockerfiles_for_every_role():
    names = {p.name for p in DOCKERFILES}
    assert {"gateway.Dockerfile", "ml.Dockerfile", "locust.Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path):
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_a_build_argument(dockerfile: Path):
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+:\S+$", text, re.MULTILINE)
    for line in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
        # every stage starts from the argument or from an earlier stage, never a literal image
        assert line == "${BASE_IMAGE}" or ("/" not in line and ":" not in line), line


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stages_run_as_non_root(dockerfile: Path):
    stages = re.split(r"^FROM ", dockerfile.read_text(), flags=re.MULTILINE)[1:]
    final_stages = [s for s in stages if "ENTRYPOINT" in s or "CMD" in s]
    assert final_stages
    for stage in final_stages:
        users = re.findall(r"^USER\s+(\S+)", stage, re.MULTILINE)
        assert users and users[-1].split(":")[0] not in ("root", "0"), stage.splitlines()[0]


def test_gateway_has_healthcheck_stopsignal_and_no_tensorflow():
    text = (DOCKER / "gateway.Dockerfile").read_text()
    final = text.split("AS gateway")[1]
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert "STOPSIGNAL SIGTERM" in final and "GATEWAY_GRACEFUL_TIMEOUT=" in final
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        assert "[ml" not in line and "[dev" not in line and "tensorflow" not in line, line


def test_dockerignore_files_all_point_to_one_context_file():
    for dockerfile in DOCKERFILES:
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        assert ignore.is_symlink() and ignore.resolve() == DOCKER / "context.dockerignore"


@pytest.mark.parametrize(
    ("lock", "extras"), [("base", []), ("ml", ["ml"]), ("load", ["load"])], ids=str
)
def test_lock_files_pin_every_dependency_within_pyproject_ranges(lock, extras):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    pins = {}
    for line in (DOCKER / f"requirements-{lock}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements-{lock}.txt: {line!r} is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    for req in wanted:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} missing from requirements-{lock}.txt; run docker/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} outside {req.specifier}; run docker/lock.sh"
        )
    if lock != "ml":
        assert "tensorflow" not in pins  # the gateway and locust images stay TensorFlow-free
