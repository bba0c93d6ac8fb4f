"""Hot reload: versions exported while a client is sending requests are picked up, labels and
"latest" follow, old versions are unloaded per policy (latest 2), nothing fails meanwhile."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.codecs.tensors import ndarray_to_tensor_proto
from tests.helpers.modelserver_process import running_modelserver

pytestmark = pytest.mark.slow

State = get_model_status_pb2.ModelVersionStatus
POLL_SECONDS = 0.3
WAIT_SECONDS = 120.0


class ClientLoop(threading.Thread):
    """Sends Predict for the latest fashion_mnist version back to back; keeps every outcome."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = "fashion_mnist"
        ndarray_to_tensor_proto(np.zeros((1, 28, 28), np.uint8), self.request.inputs["images"])
        self.versions: list[int] = []
        self.errors: list[tuple[float, grpc.StatusCode, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                reply = self.stub.Predict(self.request, timeout=30)
                self.versions.append(reply.model_spec.version.value)
            except grpc.RpcError as exc:
                self.errors.append((time.monotonic(), exc.code(), exc.details()))
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    time.sleep(0.05)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.channel.close()


def statuses(stub: Any, name: str = "fashion_mnist") -> dict[int, Any]:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    return {s.version: s for s in stub.GetModelStatus(req, timeout=30).model_version_status}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_hot_reload_under_load(
    tmp_path: Path, export_version: Callable[[Path, str, int], Path]
) -> None:
    models = tmp_path / "models"
    for name in ("fashion_mnist", "housing"):
        export_version(models, name, 1)
    with running_modelserver(models, poll_seconds=POLL_SECONDS) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        client = ClientLoop(server.grpc_target)
        client.start()
        wait_for(lambda: len(client.versions) >= 20, "the client loop to get answers")

        # Export in progress: a non-integer temp dir (and any stray dir) is never a version.
        shutil.copytree(models / "fashion_mnist" / "1", models / "fashion_mnist" / "2.partial")
        export_version(models, "fashion_mnist", 2)
        wait_for(lambda: client.versions[-1] == 2, "latest to route to version 2")
        state = statuses(status_stub)
        assert state[1].state == State.AVAILABLE and state[2].state == State.AVAILABLE

        # The canary label (-> 2 in serving/models.config) now resolves.
        canary = predict_pb2.PredictRequest()
        canary.CopyFrom(client.request)
        canary.model_spec.version_label = "canary"
        assert predict_stub.Predict(canary, timeout=30).model_spec.version.value == 2

        export_version(models, "fashion_mnist", 3)
        wait_for(lambda: client.versions[-1] == 3, "latest to route to version 3")
        wait_for(lambda: statuses(status_stub)[1].state == State.END, "version 1 to unload")
        state = statuses(status_stub)
        assert sorted(state) == [1, 2, 3]
        assert state[2].state == State.AVAILABLE and state[3].state == State.AVAILABLE

        # Version 1 is gone for explicit requests too; labels pointing to it now fail cleanly.
        v1 = predict_pb2.PredictRequest()
        v1.CopyFrom(client.request)
        v1.model_spec.version.value = 1
        with pytest.raises(grpc.RpcError) as info:
            predict_stub.Predict(v1, timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # A version that cannot load is reported with its error and never served.
        broken = models / "fashion_mnist" / "4"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(
            lambda: 4 in statuses(status_stub) and statuses(status_stub)[4].state == State.END,
            "version 4 to fail",
        )
        failed = statuses(status_stub)[4]
        assert failed.status.error_code != 0 and "4" in failed.status.error_message
        v4 = predict_pb2.PredictRequest()
        v4.CopyFrom(client.request)
        v4.model_spec.version.value = 4
        with pytest.raises(grpc.RpcError) as info:
            predict_stub.Predict(v4, timeout=30)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        time.sleep(5 * POLL_SECONDS)
        assert client.versions[-1] == 3

        # HandleReloadConfigRequest: move "stable" to version 3 without a restart.
        reload = model_management_pb2.ReloadConfigRequest()
        config = reload.config.model_config_list.config.add()
        config.name, config.base_path = "fashion_mnist", "/models/fashion_mnist"
        config.model_version_policy.latest.num_versions = 2
        config.version_labels["stable"] = 3
        status_stub.HandleReloadConfigRequest(reload, timeout=60)
        stable = predict_pb2.PredictRequest()
        stable.CopyFrom(client.request)
        stable.model_spec.version_label = "stable"
        assert predict_stub.Predict(stable, timeout=30).model_spec.version.value == 3

        client.stop()
        channel.close()
        assert client.errors == []
        assert len(client.versions) > 50
        assert client.versions == sorted(client.versions)  # never back to an older version
        assert {1, 2, 3} <= set(client.versions)
        log = server.log_text()
        for version in (1, 2, 3):
            assert f"Loaded servable version {{name: fashion_mnist version: {version}}}" in log
        assert "Unloaded servable version {name: fashion_mnist version: 1}" in log
        assert "2.partial" not in log


def test_sigterm_finishes_in_flight_requests(models_root: Path) -> None:
    with running_modelserver(models_root) as server:
        clients = [ClientLoop(server.grpc_target) for _ in range(3)]
        for client in clients:
            client.start()
        wait_for(lambda: all(len(c.versions) >= 5 for c in clients), "clients to get answers")
        # A request big enough to be still running when SIGTERM arrives (≈1 s on 2 cores).
        big = predict_pb2.PredictRequest()
        big.model_spec.name = "fashion_mnist"
        ndarray_to_tensor_proto(np.zeros((20000, 28, 28), np.uint8), big.inputs["images"])
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            in_flight = stub.Predict.future(big, timeout=60)
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            reply = in_flight.result()
        assert [d.size for d in reply.outputs["class_ids"].tensor_shape.dim] == [20000]
        assert server.process.wait(60) == 0
        for client in clients:
            client.stop()
        # Calls arriving after SIGTERM are refused by gRPC (UNAVAILABLE, or CANCELLED when
        # the call was accepted but its handler had not started): never another failure.
        codes = {error[1] for client in clients for error in client.errors}
        assert codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        assert "model server stopped" in server.log_text()
