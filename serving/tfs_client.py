"""The gRPC client of TF Serving's PredictionService / ModelService, without TensorFlow.

Used by the gateway, ``python -m client grpc`` and the locust gRPC user. One channel per client
object, created lazily on first use and re-created after ``fork()`` (gRPC channels must not cross
a fork: gunicorn workers each get their own). Every call has one deadline; retries happen only on
UNAVAILABLE (and CANCELLED, which only the other side's going away produces: this client never
cancels), bounded in number, with exponential backoff, and never past that deadline.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from serving import protos
from serving.codecs import CodecError
from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

#: Channel defaults. Reconnect backoff is capped low (gRPC's default grows to 120 s) so a gateway
#: notices a restarted model server within about a second; messages up to 64 MiB.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)

_ERROR_CODE_ENUM = protos.POOL.FindEnumTypeByName("tensorflow.error.Code")
_ERROR_CODE_NAME = {value.number: value.name for value in _ERROR_CODE_ENUM.values}


class BackendError(Exception):
    """A failed call to the model server; ``str(error)`` is a readable message."""

    def __init__(self, message: str, grpc_code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.grpc_code = grpc_code


class ModelNotFound(BackendError):  # noqa: N818 - names fixed by the contract
    """NOT_FOUND: unknown model, version or version label."""


class InvalidRequest(BackendError):  # noqa: N818 - names fixed by the contract
    """INVALID_ARGUMENT / FAILED_PRECONDITION: the server refused the inputs."""


class BackendUnavailable(BackendError):  # noqa: N818 - names fixed by the contract
    """UNAVAILABLE after the bounded retries: the server is down, unreachable or overloaded."""


class DeadlineExceeded(BackendError):  # noqa: N818 - names fixed by the contract
    """DEADLINE_EXCEEDED: no answer within the deadline."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[BackendError]] = {
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequest,
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    # This client never cancels its own calls (its deadlines end as DEADLINE_EXCEEDED), so a
    # CANCELLED comes from the other side going away mid-call: a server or proxy shutting down
    # can reset a stream (RST_STREAM CANCEL) before its GOAWAY turns the rest into UNAVAILABLE.
    grpc.StatusCode.CANCELLED: BackendUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


# TF Serving's message (ServerCore) for a label that names no version of the model.
_UNKNOWN_LABEL = "Unrecognized servable version label"


@dataclass(frozen=True)
class Prediction:
    """What one Predict call returned: the model and version that answered, and its outputs."""

    model: str
    version: int
    outputs: dict[str, np.ndarray] = field(repr=False)


class TFServingClient:
    """A thread-safe client of one model server (``host:port``)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.05,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        merged = dict(DEFAULT_CHANNEL_OPTIONS)
        merged.update(dict(options))
        self._options = tuple(merged.items())
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._predict: Callable[..., Any] | None = None
        self._metadata: Callable[..., Any] | None = None
        self._status: Callable[..., Any] | None = None

    # -- channel ---------------------------------------------------------------------------

    def _stubs(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """The RPC callables of this process's channel, creating it on first use / after fork."""
        pid = os.getpid()
        if self._pid != pid or self._predict is None:
            with self._lock:
                if self._pid != pid or self._predict is None:
                    # After fork the inherited channel belongs to the parent: drop it unclosed.
                    channel = grpc.insecure_channel(self.target, options=self._options)
                    prediction = protos.PredictionServiceStub(channel)
                    model = protos.ModelServiceStub(channel)
                    self._channel = channel
                    self._metadata = prediction.GetModelMetadata
                    self._status = model.GetModelStatus
                    self._predict = prediction.Predict
                    self._pid = pid
        return self._predict, self._metadata, self._status  # type: ignore[return-value]

    def close(self) -> None:
        """Close this process's channel (a later call opens a new one)."""
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = self._predict = self._metadata = self._status = None
            self._pid = None

    def __enter__(self) -> TFServingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def _call(self, rpc: Callable[..., Any], request: Any, what: str, timeout: float | None) -> Any:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"{what}: no answer from the model server at {self.target} "
                    f"within {budget:.3g} s",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            try:
                return rpc(request, timeout=remaining)
            except grpc.RpcError as exc:
                code = exc.code() if callable(getattr(exc, "code", None)) else None
                details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
                retryable = _ERROR_BY_CODE.get(code) is BackendUnavailable
                if retryable and attempt < self.retries:
                    pause = self.backoff * (2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
                    if time.monotonic() + pause < deadline:
                        attempt += 1
                        time.sleep(pause)
                        continue
                raise _error_for(code, details, what, self.target, budget, attempt) from None

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "serving_default",
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> Prediction:
        """Run ``model``'s signature on ``inputs`` (name -> array); raises ``BackendError``."""
        request = protos.PredictRequest()
        _fill_spec(request.model_spec, model, version, label)
        request.model_spec.signature_name = signature
        for name, array in inputs.items():
            ndarray_to_tensor_proto(array, request.inputs[name])
        if output_filter:
            request.output_filter.extend(output_filter)
        predict, _, _ = self._stubs()
        response = self._call(
            predict, request, f"Predict {_spec_text(model, version, label)}", timeout
        )
        try:
            outputs = {name: tensor_proto_to_ndarray(t) for name, t in response.outputs.items()}
        except CodecError as exc:
            raise BackendError(f"model server sent an undecodable output: {exc}") from exc
        answered = (
            response.model_spec.version.value if response.model_spec.HasField("version") else 0
        )
        return Prediction(
            model=response.model_spec.name or model, version=answered, outputs=outputs
        )

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The served signatures.

        ``{"model_spec": {"name", "version"}, "signature_def": {name: SignatureDef as JSON}}``.
        """
        request = protos.GetModelMetadataRequest()
        _fill_spec(request.model_spec, model, version, label)
        request.metadata_field.append("signature_def")
        _, metadata, _ = self._stubs()
        what = f"GetModelMetadata {_spec_text(model, version, label)}"
        response = self._call(metadata, request, what, timeout)
        signature_map = protos.SignatureDefMap()
        if "signature_def" in response.metadata:
            signature_map.ParseFromString(response.metadata["signature_def"].value)
        as_json = json_format.MessageToDict(signature_map, preserving_proto_field_name=True)
        return {
            "model_spec": {
                "name": response.model_spec.name or model,
                "version": response.model_spec.version.value,
            },
            "signature_def": as_json.get("signature_def", {}),
        }

    def status(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """``[{"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]``,
        oldest version first."""
        request = protos.GetModelStatusRequest()
        _fill_spec(request.model_spec, model, version, label)
        _, _, status = self._stubs()
        what = f"GetModelStatus {_spec_text(model, version, label)}"
        response = self._call(status, request, what, timeout)
        statuses = sorted(response.model_version_status, key=lambda item: item.version)
        return [
            {
                "version": int(item.version),
                "state": protos.MODEL_STATE_NAME.get(item.state, str(item.state)),
                "error_code": _ERROR_CODE_NAME.get(
                    item.status.error_code, str(item.status.error_code)
                ),
                "error_message": item.status.error_message,
            }
            for item in statuses
        ]


def _fill_spec(spec: Any, model: str, version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise ValueError("give a version or a version label, not both")
    spec.name = model
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label


def _spec_text(model: str, version: int | None, label: str | None) -> str:
    if version is not None:
        return f"{model} version {version}"
    if label is not None:
        return f"{model} label {label!r}"
    return model


def _error_for(
    code: grpc.StatusCode | None,
    details: str | None,
    what: str,
    target: str,
    budget: float,
    retries: int,
) -> BackendError:
    error_class = _ERROR_BY_CODE.get(code, BackendError) if code is not None else BackendError
    details = (details or "").strip()
    if code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(_UNKNOWN_LABEL):
        error_class = ModelNotFound  # TF Serving reports an unknown label as INVALID_ARGUMENT
    if error_class is BackendUnavailable:
        tries = f" after {retries + 1} attempts" if retries else ""
        message = f"{what}: model server at {target} is unavailable{tries} ({details})"
    elif error_class is DeadlineExceeded:
        message = f"{what}: no answer from the model server at {target} within {budget:.3g} s"
    else:
        name = code.name if code is not None else "UNKNOWN"
        message = f"{what}: {details or name}"
    return error_class(message, code)
