"""Property-based fuzzing of the gateway's HTTP API from its own OpenAPI document (schemathesis).

Runs against the session's live stack: gunicorn gateway + the real local model server. Every
operation of ``GET /openapi.json`` is fuzzed in schemathesis' positive mode (requests the document
allows) and negative mode (requests it forbids: wrong types, missing/extra fields, out-of-range
parameters, other media types). For each case:

- no 5xx, except the documented 503/504 (model server overloaded / slow);
- every 4xx is JSON ``{"error": {"code": str, "message": str}}`` and nothing else;
- schemathesis' own checks: the status code and content type are documented, the body matches the
  documented schema, and negative cases are not accepted (no 2xx for requests the schema forbids).

``SECURITY_FUZZ_CASES`` sets the total budget of generated cases (default 200 for ``make test``;
``make fuzz`` runs 1,200). The budget is shared among the (operation, mode) pairs; parameterless
GETs are exhausted after one case, and their unused budget goes to the POST endpoints. The counts
are printed (``-s``) and written to ``$SECURITY_FUZZ_REPORT`` when set.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import orjson
import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")  # the security extra (in dev)

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

TOTAL_CASES = int(os.environ.get("SECURITY_FUZZ_CASES", "200"))
ALLOWED_5XX = {503, 504}
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# Share of the budget per operation: the POST endpoints carry the inputs worth fuzzing.
WEIGHTS = {"POST /predict": 6, "POST /predict/housing": 4}


def _check_error_shape(response, label: str) -> None:
    # schemathesis' Response: lower-case header names, each with a list of values.
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{label}: {response.status_code} with Content-Type {content_type!r}"
    )
    document = orjson.loads(response.content)
    assert isinstance(document, dict) and set(document) == {"error"}, (label, document)
    error = document["error"]
    assert set(error) == {"code", "message"}, (label, document)
    assert isinstance(error["code"], str) and error["code"], (label, document)
    assert isinstance(error["message"], str) and error["message"], (label, document)
    assert "Traceback" not in error["message"]


def _budgets(labels: list[str], total_cases: int) -> dict[str, int]:
    """Cases per (operation, mode): one for each other operation (they have no inputs), the
    rest shared by the POST endpoints by WEIGHTS."""
    fuzzed = [label for label in labels if label in WEIGHTS]
    budgets = {label: 1 for label in labels if label not in WEIGHTS}
    remaining = max(total_cases - len(budgets) * len(MODES), len(fuzzed) * len(MODES))
    weight_sum = sum(WEIGHTS[label] for label in fuzzed)
    for label in fuzzed:
        budgets[label] = max(1, remaining * WEIGHTS[label] // weight_sum // len(MODES))
    return budgets


def _fuzz_operation(operation, mode, budget: int, base_url: str, session, counts, statuses):
    key = f"{operation.label} [{mode.value}]"
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode is schemathesis.GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=os.environ.get("SECURITY_FUZZ_SEED") is None,  # reproducible by default
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30)
        counts[key] += 1
        status = response.status_code
        statuses[key][status] += 1
        assert status < 500 or status in ALLOWED_5XX, f"{key}: {status} {response.content[:300]!r}"
        if status >= 400:
            _check_error_shape(response, f"{key} {case.as_curl_command()}")
        if status not in ALLOWED_5XX:  # documented, but transient: not a schema question
            case.validate_response(response, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # No request can violate an operation without parameters or body: nothing to send.
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise


def fuzz_gateway(base_url: str, total_cases: int) -> dict:
    """Fuzz every operation of the gateway at ``base_url``; returns the case counts."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    budgets = _budgets([op.label for op in operations], total_cases)
    session = requests.Session()
    counts: collections.Counter = collections.Counter()
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for operation in operations:
        for mode in MODES:
            _fuzz_operation(
                operation, mode, budgets[operation.label], base_url, session, counts, statuses
            )
    summary = {
        "total_cases": sum(counts.values()),
        "budget": total_cases,
        "schemathesis": schemathesis.__version__,
        "cases": dict(counts),
        "statuses": {key: dict(sorted(c.items())) for key, c in statuses.items()},
    }
    # The POST endpoints must really have been fuzzed in both modes.
    for label in ("POST /predict", "POST /predict/housing"):
        for mode in MODES:
            assert counts[f"{label} [{mode.value}]"] >= min(20, budgets[label] // 2), summary
    # After all that, the stack still serves.
    assert session.get(f"{base_url}/readyz", timeout=10).status_code == 200
    return summary


def test_gateway_api_survives_schema_driven_fuzzing(live_stack):
    summary = fuzz_gateway(live_stack.gateway_url, TOTAL_CASES)
    print("\nschemathesis fuzzing:", json.dumps(summary, indent=1))
    report = os.environ.get("SECURITY_FUZZ_REPORT")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps(summary, indent=1) + "\n")
