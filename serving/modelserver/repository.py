"""Model repository: poll the base paths, load + warm up new versions, serve, unload old ones.

Availability-preserving, like TF Serving's default policy: a new version is loaded and warmed
up before it becomes AVAILABLE (and "latest"), and the versions the policy drops are unloaded
only after that. Readers never lock: each model's state is an immutable snapshot that the
single poll thread replaces whole.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from serving.modelserver.config import ModelConfig
from serving.modelserver.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelServerError,
    NotFound,
    Unavailable,
)
from serving.modelserver.servable import (
    SAVED_MODEL_FILES,
    LoadError,
    Servable,
    load_servable,
    warmup_requests,
)
from serving.modelserver.specs import ModelRef, VersionState
from serving.modelserver.validation import validate_inputs

log = logging.getLogger("serving.modelserver")
_VERSION_DIR = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class ModelSnapshot:
    """What one model serves right now; replaced whole on every change."""

    config: ModelConfig
    servables: dict[int, Servable] = field(default_factory=dict)
    states: dict[int, VersionState] = field(default_factory=dict)

    @property
    def latest(self) -> Servable | None:
        return self.servables[max(self.servables)] if self.servables else None


def _request_text(ref: ModelRef) -> str:
    """TF Serving's rendering of a servable request, kept so log/greps match."""
    if ref.version is not None:
        return f"Specific({ref.name}, {ref.version})"
    return f"Latest({ref.name})"


def scan_versions(base_path: Path) -> list[int]:
    """Integer version directories holding a SavedModel; export temp dirs are skipped."""
    try:
        entries = list(base_path.iterdir())
    except OSError:
        return []
    versions = []
    for entry in entries:
        # A numeric dir without saved_model.pb is still being copied in: not yet a version.
        if (
            _VERSION_DIR.fullmatch(entry.name)
            and entry.is_dir()
            and any((entry / name).is_file() for name in SAVED_MODEL_FILES)
        ):
            versions.append(int(entry.name))
    return sorted(versions)


class ModelRepository:
    """Thread-safe reads (`resolve`, `status`, `ready`); one poll thread writes."""

    def __init__(
        self,
        models: list[ModelConfig],
        *,
        poll_seconds: float = 1.0,
        warmup: bool = True,
        metrics: Any = None,
        on_change: Callable[[], None] | None = None,
        session_config: Any = None,
    ) -> None:
        self._snapshots: dict[str, ModelSnapshot] = {m.name: ModelSnapshot(m) for m in models}
        self._poll_seconds = poll_seconds
        self._warmup = warmup
        self._metrics = metrics
        self._on_change = on_change
        self._session_config = session_config  # ConfigProto for every version's session
        self._write_lock = threading.Lock()  # one writer: poll thread or a config reload
        self._failed: dict[tuple[str, int], float] = {}  # (model, version) -> dir mtime
        self._missing_logged: set[Path] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- reads (any thread) ------------------------------------------------------------
    def model_names(self) -> list[str]:
        return list(self._snapshots)

    def snapshot(self, name: str) -> ModelSnapshot:
        snap = self._snapshots.get(name)
        if snap is None:
            configured = ", ".join(sorted(self._snapshots)) or "none"
            raise NotFound(
                f"Servable not found for request: Latest({name}): no model named '{name}' "
                f"is configured (models: {configured})"
            )
        return snap

    def resolve(self, ref: ModelRef) -> Servable:
        """The servable a request asks for, or the TF Serving error for why there is none."""
        snap = self.snapshot(ref.name)
        version = ref.version
        how = ""
        if ref.label is not None:
            labels = snap.config.labels
            if ref.label not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise InvalidArgument(
                    f"Unrecognized servable version label: {ref.label} "
                    f"(labels of model '{ref.name}': {known})"
                )
            version = labels[ref.label]
            how = f" (label '{ref.label}')"
        if version is None:
            latest = snap.latest
            if latest is None:
                raise Unavailable(
                    f"Servable not found for request: Latest({ref.name}): no version of model "
                    f"'{ref.name}' is available yet{self._why_none(snap)}"
                )
            return latest
        servable = snap.servables.get(version)
        if servable is not None:
            return servable
        text = f"Servable not found for request: Specific({ref.name}, {version}){how}"
        state = snap.states.get(version)
        if state is not None and state.state in ("START", "LOADING"):
            raise Unavailable(f"{text}: version {version} is still loading")
        if state is not None and state.error_code:
            raise FailedPrecondition(
                f"{text}: version {version} failed to load: {state.error_message}"
            )
        available = sorted(snap.servables)
        raise NotFound(f"{text}: available versions of '{ref.name}': {available}")

    @staticmethod
    def _why_none(snap: ModelSnapshot) -> str:
        failed = [s for s in snap.states.values() if s.error_code]
        if failed:
            last = max(failed, key=lambda s: s.version)
            return f"; version {last.version} failed to load: {last.error_message}"
        return f" (nothing loadable under {snap.config.base_path})"

    def status(self, ref: ModelRef) -> list[VersionState]:
        """GetModelStatus: every known version (newest first) or the one asked for."""
        # As TF Serving: a label resolves first (ServerCore::GetModelVersionForLabel: an unknown
        # (model, label) pair is INVALID_ARGUMENT), then get_model_status_impl.cc looks up one
        # (model, version) or all versions, each with its own NOT_FOUND message.
        snap = self._snapshots.get(ref.name)
        states = snap.states if snap is not None else {}
        version = ref.version
        if ref.label is not None:
            labels = snap.config.labels if snap is not None else {}
            if ref.label not in labels:
                raise InvalidArgument(f"Unrecognized servable version label: {ref.label}")
            version = labels[ref.label]
        if version is None:
            if not states:
                raise NotFound(f"Could not find any versions of model {ref.name}")
            return [states[v] for v in sorted(states, reverse=True)]
        if version not in states:
            raise NotFound(f"Could not find version {version} of model {ref.name}")
        return [states[version]]

    def ready(self) -> bool:
        return all(snap.servables for snap in self._snapshots.values())

    def label_problems(self) -> list[str]:
        """Labels pointing to versions that are not AVAILABLE (TF Serving refuses those
        unless --allow_version_labels_for_unavailable_models)."""
        return [
            f"label '{label}' of model '{name}' points to version {version}, which is not available"
            for name, snap in self._snapshots.items()
            for label, version in sorted(snap.config.labels.items())
            if version not in snap.servables
        ]

    # ---- writes (poll thread, config reload) --------------------------------------------
    def start(self) -> None:
        """Poll in the background every ``poll_seconds`` (0: only the initial poll)."""
        if self._poll_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll_once()
            except Exception:  # never let the poller die; the next poll retries
                log.exception("model poll failed")

    def apply_config(self, models: list[ModelConfig]) -> None:
        """Adopt a new model list: new models start empty, removed ones are unloaded."""
        with self._write_lock:
            new = {}
            for model in models:
                old = self._snapshots.get(model.name)
                new[model.name] = replace(old, config=model) if old else ModelSnapshot(model)
            for name in set(self._snapshots) - set(new):
                for version in sorted(self._snapshots[name].servables):
                    log.info(
                        "Unloaded servable version {name: %s version: %d} "
                        "(model removed from config)",
                        name,
                        version,
                    )
            self._snapshots = new
        self.poll_once()

    def poll_once(self) -> None:
        """One scan of every base path: load what the policy wants, then unload the rest."""
        with self._write_lock:
            changed = False
            for name in list(self._snapshots):
                changed |= self._poll_model(name)
            if changed:
                # Loading creates many long-lived objects: collect once, then freeze them out
                # of future collections so a full GC (~0.1 s with TF) never lands on a request.
                gc.unfreeze()
                gc.collect()
                gc.freeze()
        if changed and self._on_change is not None:
            self._on_change()

    def _poll_model(self, name: str) -> bool:
        snap = self._snapshots[name]
        base = snap.config.base_path
        if not base.is_dir():
            if base not in self._missing_logged:
                self._missing_logged.add(base)
                log.warning("base path %s of model %s does not exist; still polling", base, name)
        else:
            self._missing_logged.discard(base)
        wanted = snap.config.policy.select(scan_versions(base))
        changed = False
        for version in sorted(wanted - set(snap.servables), reverse=True):
            changed |= self._load(name, version)
        snap = self._snapshots[name]
        for version in sorted(set(snap.servables) - wanted):
            self._unload(name, version)
            changed = True
        return changed

    def _set(
        self,
        name: str,
        version: int,
        state: VersionState,
        servable: Servable | None = None,
        drop: bool = False,
    ) -> None:
        snap = self._snapshots[name]
        servables = dict(snap.servables)
        if servable is not None:
            servables[version] = servable
        if drop:
            servables.pop(version, None)
        self._snapshots[name] = replace(
            snap, servables=servables, states={**snap.states, version: state}
        )

    def _load(self, name: str, version: int) -> bool:
        path = self._snapshots[name].config.base_path / str(version)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        if self._failed.get((name, version)) == mtime:
            return False  # failed before and unchanged since: don't retry every poll
        self._set(name, version, VersionState(version, "LOADING"))
        started = time.perf_counter()
        try:
            servable = load_servable(name, version, path, self._session_config)
            warmed = self._run_warmup(servable) if self._warmup else 0
        except LoadError as exc:
            seconds = time.perf_counter() - started
            self._failed[(name, version)] = mtime
            code = grpc.StatusCode.UNKNOWN.value[0]
            self._set(name, version, VersionState(version, "END", code, str(exc)))
            log.error(
                "Failed to load servable version {name: %s version: %d} after %.2f s: %s",
                name,
                version,
                seconds,
                exc,
            )
            self._record_load(name, version, seconds, ok=False)
            return True
        seconds = time.perf_counter() - started
        self._failed.pop((name, version), None)
        self._set(name, version, VersionState(version, "AVAILABLE"), servable=servable)
        log.info(
            "Loaded servable version {name: %s version: %d} in %.2f s (%d warmup records)",
            name,
            version,
            seconds,
            warmed,
        )
        self._record_load(name, version, seconds, ok=True)
        return True

    def _run_warmup(self, servable: Servable) -> int:
        requests = warmup_requests(servable.path)
        for index, (sig_name, inputs) in enumerate(requests):
            signature = servable.signatures.get(sig_name)
            if signature is None:
                raise LoadError(f"warmup record {index}: no signature '{sig_name}'")
            try:
                validate_inputs(signature, inputs)
                signature.run(inputs)
            except ModelServerError as exc:
                raise LoadError(f"warmup record {index}: {exc.message}") from exc
            except Exception as exc:
                raise LoadError(f"warmup record {index} failed: {exc}") from exc
        return len(requests)

    def _unload(self, name: str, version: int) -> None:
        self._set(name, version, VersionState(version, "END"), drop=True)
        log.info(
            "Unloaded servable version {name: %s version: %d} (no longer in policy %s)",
            name,
            version,
            self._snapshots[name].config.policy.describe(),
        )

    def _record_load(self, name: str, version: int, seconds: float, ok: bool) -> None:
        if self._metrics is not None:
            path = self._snapshots[name].config.base_path / str(version)
            self._metrics.record_load(name, version, seconds, ok, path=str(path))
