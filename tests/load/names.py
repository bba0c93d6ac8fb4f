"""User classes and statistics entry names, shared by the locustfile, run.py and the tests
(this module does not import locust, which would monkey-patch the importing process)."""

from __future__ import annotations

#: Entry names in locust's statistics, one per user class (shown after the type: POST, grpc).
NAME_JSON = "/predict [json]"
NAME_UPLOAD = "/predict [png upload]"
NAME_HOUSING = "/predict/housing"
NAME_GRPC = "Predict fashion_mnist"
ENTRY_BY_CLASS = {
    "GatewayJsonUser": NAME_JSON,
    "GatewayUploadUser": NAME_UPLOAD,
    "GatewayHousingUser": NAME_HOUSING,
    "GrpcPredictUser": NAME_GRPC,
}
GATEWAY_CLASSES = ["GatewayJsonUser", "GatewayUploadUser", "GatewayHousingUser"]
CLASSES_BY_TARGET = {
    "gateway": GATEWAY_CLASSES,
    "grpc": ["GrpcPredictUser"],
    "all": [*GATEWAY_CLASSES, "GrpcPredictUser"],
}
