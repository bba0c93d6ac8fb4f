"""``python -m client http ...`` end to end against the gateway (and the model server behind it)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from client_helpers import assert_one_line_error

from client.errors import EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.helpers.housing import HOUSING_ROW

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def features_arg(row: dict[str, float]) -> str:
    return ",".join(f"{k}={v}" for k, v in row.items())


def test_predict_pixels_and_upload_agree_with_grpc(cli, live_stack, image_files) -> None:
    files = [image_files["png0"], image_files["png1"]]
    url = ("--url", live_stack.gateway_url)
    pixels = cli("http", "predict", *url, "--json", *files)
    assert pixels.code == 0, pixels.err
    upload = cli("http", "predict", *url, "--json", "--upload", *files)
    assert upload.code == 0, upload.err
    direct = cli("grpc", "predict", "--server", live_stack.grpc_target, "--json", *files)
    docs = [json.loads(r.out) for r in (pixels, upload, direct)]
    for doc in docs:
        assert doc["version"] == 1 and len(doc["predictions"]) == 2
    # One conversion everywhere: same image -> same tensor -> same probabilities.
    for a, b, c in zip(*(d["predictions"] for d in docs), strict=True):
        assert a["class_name"] == b["class_name"] == c["class_name"]
        assert a["probabilities"] == pytest.approx(c["probabilities"], abs=1e-6)
        assert b["probabilities"] == pytest.approx(c["probabilities"], abs=1e-6)

    table = cli("http", "predict", *url, image_files["npy"])
    assert table.code == 0 and f"{image_files['npy']}[2]" in table.out


def test_predict_test_images_and_versions(cli, live_stack, fashion_data_dir, image_files) -> None:
    url = ("--url", live_stack.gateway_url)
    result = cli(
        "http", "predict", *url, "--data-dir", fashion_data_dir, "--test-images", 7,
        "--seed", 1, "--batch-size", 3, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    hits = sum(p["class_id"] == p["true_class_id"] for p in doc["predictions"])
    assert len(doc["predictions"]) == 7 and doc["accuracy"] == pytest.approx(hits / 7)

    png = image_files["png0"]
    assert (
        json.loads(cli("http", "predict", *url, "--version", 1, "--json", png).out)["version"] == 1
    )
    assert (
        json.loads(cli("http", "predict", *url, "--label", "stable", "--json", png).out)["version"]
        == 1
    )
    # Unknown versions/labels are the HTTP equivalent of an unknown model: 404.
    assert_one_line_error(cli("http", "predict", *url, "--version", 99, png), EXIT_REJECTED, "404")
    assert_one_line_error(cli("http", "predict", *url, "--label", "canary", png), EXIT_REJECTED)


def test_housing_agrees_with_grpc(cli, live_stack, tmp_path: Path) -> None:
    features = ("--features", features_arg(HOUSING_ROW), "--json")
    http = cli("http", "housing", "--url", live_stack.gateway_url, *features)
    assert http.code == 0, http.err
    grpc = cli(
        "grpc", "housing", "--server", live_stack.grpc_target,
        "--models-dir", live_stack.models_root, *features,
    )  # fmt: skip
    assert grpc.code == 0, grpc.err
    a, b = json.loads(http.out)["predictions"][0], json.loads(grpc.out)["predictions"][0]
    assert math.isfinite(a["main"]) and a["main"] == pytest.approx(b["main"], rel=1e-6)

    csv_path = tmp_path / "rows.csv"
    names = sorted(HOUSING_ROW)
    csv_path.write_text(",".join(names) + "\n" + ",".join(str(HOUSING_ROW[n]) for n in names))
    table = cli("http", "housing", "--url", live_stack.gateway_url, "--csv", csv_path)
    assert table.code == 0 and "prediction" in table.out


def test_bad_features(cli, live_stack) -> None:
    url = ("--url", live_stack.gateway_url)
    unknown = cli("http", "housing", *url, "--features", features_arg(dict(HOUSING_ROW, Rooms=1)))
    assert_one_line_error(unknown, EXIT_REJECTED, "Rooms")  # checked by the gateway: HTTP 400
    missing = {k: v for k, v in HOUSING_ROW.items() if k != "Latitude"}
    assert_one_line_error(
        cli("http", "housing", *url, "--features", features_arg(missing)), EXIT_REJECTED, "Latitude"
    )
    not_number = features_arg(HOUSING_ROW).replace("41.0", "forty")
    assert_one_line_error(cli("http", "housing", *url, "--features", not_number), EXIT_USAGE)


def test_errors(cli, live_stack, image_files, free_port, blackhole) -> None:
    png = image_files["png0"]
    down = cli("http", "predict", "--url", f"http://127.0.0.1:{free_port}", png)
    assert_one_line_error(down, EXIT_UNAVAILABLE, str(free_port), "unreachable")
    slow = cli("http", "predict", "--url", f"http://{blackhole}", "--timeout", 0.5, png)
    assert_one_line_error(slow, EXIT_UNAVAILABLE, "no answer within 0.5 s")
    bad_url = cli("http", "predict", "--url", "localhost:8000", png)
    assert_one_line_error(bad_url, EXIT_USAGE, "--url")
    url = ("--url", live_stack.gateway_url)
    local = cli("http", "predict", *url, image_files["not_an_image"])
    assert_one_line_error(local, EXIT_USAGE, "notes.png")
    remote = cli("http", "predict", *url, "--upload", image_files["not_an_image"])
    assert_one_line_error(remote, EXIT_REJECTED, "400")
    assert_one_line_error(cli("http", "predict", *url, "--upload", image_files["npy"]), EXIT_USAGE)


def test_clients_do_not_import_tensorflow(live_stack, image_files) -> None:
    """Run real commands in a fresh interpreter and check tensorflow was never imported."""
    commands = [
        ["grpc", "predict", "--server", live_stack.grpc_target, str(image_files["png0"])],
        ["grpc", "housing", "--server", live_stack.grpc_target, "--models-dir",
         str(live_stack.models_root), "--features", features_arg(HOUSING_ROW)],
        ["grpc", "metadata", "--server", live_stack.grpc_target],
        ["http", "predict", "--url", live_stack.gateway_url, "--upload", str(image_files["png0"])],
        ["http", "housing", "--url", live_stack.gateway_url, "--features",
         features_arg(HOUSING_ROW)],
    ]  # fmt: skip
    script = (
        "import sys, json\n"
        "from client.cli import main\n"
        "codes = [main(argv) for argv in json.loads(sys.argv[1])]\n"
        "assert codes == [0] * len(codes), codes\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_api_key_from_the_environment(cli, live_stack, image_files, monkeypatch) -> None:
    """Against a gateway that requires API keys: refused without GATEWAY_API_KEY, fine with it."""
    from client import cli as cli_module
    from tests.helpers.gateway_process import running_gateway

    key = "k" * 24 + "-client-test"
    with running_gateway(
        live_stack.grpc_target, live_stack.models_root, env={"GATEWAY_API_KEYS": key}, workers=1
    ) as gateway:
        args = ("http", "predict", "--url", gateway.url, "--upload", image_files["png0"])
        monkeypatch.setattr(cli_module, "API_KEY", None)
        assert_one_line_error(cli(*args), EXIT_REJECTED, "401")
        monkeypatch.setattr(cli_module, "API_KEY", "wrong-key-of-some-length")
        refused = cli(*args)
        assert_one_line_error(refused, EXIT_REJECTED, "403")
        assert "wrong-key" not in refused.err  # the key is never echoed
        monkeypatch.setattr(cli_module, "API_KEY", key)
        assert cli(*args).code == 0
        housing = cli(
            "http", "housing", "--url", gateway.url, "--features", features_arg(HOUSING_ROW)
        )
        assert housing.code == 0, housing.err


@pytest.mark.parametrize("port", ["70000", "-1", "abc", "0"])
def test_bad_url_port_is_a_usage_error(cli, image_files, port: str) -> None:
    result = cli("http", "predict", "--url", f"http://127.0.0.1:{port}", image_files["png0"])
    assert_one_line_error(result, EXIT_USAGE, "--url", "1..65535")


def test_unsendable_api_key_is_a_usage_error(cli, image_files, free_port, monkeypatch) -> None:
    from client import cli as cli_module

    for key in ("line\nbreak-0123456789", "ключ-0123456789abcdef", "has space 0123456789"):
        monkeypatch.setattr(cli_module, "API_KEY", key)
        result = cli(
            "http", "predict", "--url", f"http://127.0.0.1:{free_port}", image_files["png0"]
        )
        assert_one_line_error(result, EXIT_USAGE, "GATEWAY_API_KEY")
        assert key not in result.err  # never echoed
