"""gRPC adapter (grpc.aio): TF Serving's PredictionService and ModelService over the data plane.

The servicers are coroutines on one asyncio loop: parsing, checks and answers run on the loop,
graph calls in an executor (or through the async batcher), so no thread is parked per request.
Only wire translation lives here (TensorProto <-> numpy via ``serving.codecs.tensors``,
ModelSpec <-> ModelRef); every check is in the data plane, shared with REST.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.codecs import CodecError
from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from serving.modelserver.dataplane import DataPlane
from serving.modelserver.errors import InvalidArgument, ModelServerError, Unimplemented
from serving.modelserver.specs import ModelRef

log = logging.getLogger("serving.modelserver")

ENTRYPOINT = "GRPC"
_STATE_NUMBER = {
    name: number
    for number, name in (
        (0, "UNKNOWN"),
        (10, "START"),
        (20, "LOADING"),
        (30, "AVAILABLE"),
        (40, "UNLOADING"),
        (50, "END"),
    )
}


def model_ref(spec: Any) -> ModelRef:
    """ModelSpec -> ModelRef (name plus the ``version_choice`` oneof)."""
    if not spec.name:
        raise InvalidArgument("Missing ModelSpec: model_spec.name is empty")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return ModelRef(spec.name, version=int(spec.version.value))
    if choice == "version_label":
        return ModelRef(spec.name, label=spec.version_label)
    return ModelRef(spec.name)


def _fill_spec(spec: Any, name: str, version: int, signature_name: str | None) -> None:
    spec.name = name
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name


class _Call:
    """Times one RPC, records it, and turns ModelServerError into a gRPC status."""

    __slots__ = ("_api", "_context", "_metrics", "_started", "model", "version")

    def __init__(self, metrics: Any, api: str, context: grpc.ServicerContext) -> None:
        self._metrics = metrics
        self._api = api
        self._context = context
        self._started = time.perf_counter()
        self.model = ""
        self.version: int | None = None

    async def run_async(self, work: Callable[[], Awaitable[Any]], empty: Any) -> Any:
        try:
            return self._done(await work(), "OK")
        except ModelServerError as exc:
            return self._failed(exc, empty)
        except Exception as exc:
            return self._crashed(exc, empty)

    def run(self, work: Callable[[], Any], empty: Any) -> Any:
        try:
            return self._done(work(), "OK")
        except ModelServerError as exc:
            return self._failed(exc, empty)
        except Exception as exc:
            return self._crashed(exc, empty)

    def _failed(self, exc: ModelServerError, empty: Any) -> Any:
        self._context.set_code(exc.code)
        self._context.set_details(exc.message)
        return self._done(empty, exc.code.name)

    def _crashed(self, exc: Exception, empty: Any) -> Any:
        # A bug: answer INTERNAL with one line, log the trace.
        log.error("%s failed", self._api, exc_info=exc)
        self._context.set_code(grpc.StatusCode.INTERNAL)
        self._context.set_details(f"internal error: {type(exc).__name__}: {exc}")
        return self._done(empty, "INTERNAL")

    def _done(self, response: Any, status: str) -> Any:
        if self._metrics is not None:
            self._metrics.record_request(
                self.model,
                self.version,
                self._api,
                ENTRYPOINT,
                status,
                time.perf_counter() - self._started,
            )
        return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, dataplane: DataPlane, metrics: Any = None) -> None:
        self._dataplane = dataplane
        self._metrics = metrics

    async def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        call = _Call(self._metrics, "Predict", context)
        call.model = request.model_spec.name

        async def work() -> Any:
            ref = model_ref(request.model_spec)
            inputs = {}
            for name, proto in request.inputs.items():
                try:
                    inputs[name] = tensor_proto_to_ndarray(proto)
                except CodecError as exc:
                    raise InvalidArgument(f"input '{name}': {exc}") from exc
            result = await self._dataplane.predict_async(
                ref, inputs, request.model_spec.signature_name, list(request.output_filter)
            )
            call.version = result.version
            response = predict_pb2.PredictResponse()
            _fill_spec(
                response.model_spec, result.model_name, result.version, result.signature_name
            )
            for name, array in result.outputs.items():
                ndarray_to_tensor_proto(array, response.outputs[name])
            return response

        return await call.run_async(work, predict_pb2.PredictResponse())

    async def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        call = _Call(self._metrics, "GetModelMetadata", context)
        call.model = request.model_spec.name

        def work() -> Any:
            ref = model_ref(request.model_spec)
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidArgument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in fields:
                if field != "signature_def":
                    raise InvalidArgument(f"Metadata field {field} is not supported")
            version, signature_def_map = self._dataplane.metadata(ref)
            call.version = version
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_spec(response.model_spec, ref.name, version, None)
            response.metadata["signature_def"].Pack(signature_def_map)
            return response

        return call.run(work, get_model_metadata_pb2.GetModelMetadataResponse())

    def _unimplemented(self, api: str, context: grpc.ServicerContext, empty: Any) -> Any:
        def work() -> Any:
            raise Unimplemented(
                f"{api} is not implemented by this model server: the served models export "
                f"only Predict signatures; use Predict"
            )

        return _Call(self._metrics, api, context).run(work, empty)

    async def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import classification_pb2

        return self._unimplemented("Classify", context, classification_pb2.ClassificationResponse())

    async def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import regression_pb2

        return self._unimplemented("Regress", context, regression_pb2.RegressionResponse())

    async def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import inference_pb2

        return self._unimplemented(
            "MultiInference", context, inference_pb2.MultiInferenceResponse()
        )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Any = None,
        reload_config: Callable[[Any], None] | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._metrics = metrics
        self._reload_config = reload_config

    async def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        call = _Call(self._metrics, "GetModelStatus", context)
        call.model = request.model_spec.name

        def work() -> Any:
            states = self._dataplane.status(model_ref(request.model_spec))
            response = get_model_status_pb2.GetModelStatusResponse()
            for state in states:
                entry = response.model_version_status.add()
                entry.version = state.version
                entry.state = _STATE_NUMBER.get(state.state, 0)
                entry.status.error_code = state.error_code
                entry.status.error_message = state.error_message
            return response

        return call.run(work, get_model_status_pb2.GetModelStatusResponse())

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        call = _Call(self._metrics, "HandleReloadConfigRequest", context)

        async def work() -> Any:
            if self._reload_config is None:
                raise Unimplemented("config reload is not enabled on this server")
            # Loading models takes seconds: keep the loop serving meanwhile.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._reload_config, request.config)
            return model_management_pb2.ReloadConfigResponse()

        return await call.run_async(work, model_management_pb2.ReloadConfigResponse())


# --------------------------------------------------------------------------------------------
# Registration


class _Undecodable:
    """What a request that is not a valid serialized message deserializes to."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(from_string: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return from_string(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return _Undecodable(exc)

    return deserialize


def _refusing_undecodable(
    behavior: Callable[[Any, Any], Awaitable[Any]], request_type: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        if type(request) is _Undecodable:
            log.debug("undecodable %s: %s", request_type, request.error)
            # TF Serving's C++ gRPC answers a request it cannot parse with INTERNAL.
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"Failed to parse request: not a valid serialized {request_type}",
            )
        return await behavior(request, context)

    return call


def _handlers(servicer: Any, methods: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    return {
        name: grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(servicer, name), request.DESCRIPTOR.full_name),
            request_deserializer=_tolerant(request.FromString),
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in methods.items()
    }


def add_servicers(server: Any, prediction: PredictionServicer, model: ModelServicer) -> None:
    """Register both services as the generated ``add_*_to_server`` functions do, except that a
    request that does not parse is answered INTERNAL with one line (as TF Serving's C++ server)
    instead of grpc's UNKNOWN "Unexpected <class DecodeError>" and a traceback per call."""
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    prediction_methods = {
        "Classify": (
            classification_pb2.ClassificationRequest,
            classification_pb2.ClassificationResponse,
        ),
        "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
        "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "MultiInference": (
            inference_pb2.MultiInferenceRequest,
            inference_pb2.MultiInferenceResponse,
        ),
        "GetModelMetadata": (
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
        ),
    }
    model_methods = {
        "GetModelStatus": (
            get_model_status_pb2.GetModelStatusRequest,
            get_model_status_pb2.GetModelStatusResponse,
        ),
        "HandleReloadConfigRequest": (
            model_management_pb2.ReloadConfigRequest,
            model_management_pb2.ReloadConfigResponse,
        ),
    }
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService", _handlers(prediction, prediction_methods)
            ),
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.ModelService", _handlers(model, model_methods)
            ),
        )
    )
