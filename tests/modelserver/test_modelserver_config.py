"""The config files and flags of the local model server: parsed with the TF Serving protos,
base paths mapped by --models_root, one clear line and exit 2 on a bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.gateway.config import GatewayConfig
from serving.modelserver.config import (
    ConfigError,
    VersionPolicy,
    load_batching_config,
    load_model_config,
    load_monitoring_config,
    map_base_path,
    parse_model_config,
)
from serving.modelserver.repository import scan_versions
from serving.modelserver.settings import parse_settings
from tests.helpers.modelserver_process import REPO_ROOT

SERVING = REPO_ROOT / "serving"


def test_repo_models_config() -> None:
    models = load_model_config(SERVING / "models.config", Path("/srv/m"))
    assert [m.name for m in models] == ["fashion_mnist", "housing"]
    for model in models:
        assert model.base_path == Path("/srv/m") / model.name
        assert model.policy == VersionPolicy("latest", 2)
        assert model.labels == {"stable": 1, "canary": 2}


def test_without_models_root_base_paths_are_used_as_written() -> None:
    models = load_model_config(SERVING / "models.config", None)
    assert models[0].base_path == Path("/models/fashion_mnist")


@pytest.mark.parametrize(
    ("base_path", "expected"),
    [
        ("/models/a", "/root/a"),
        ("/models", "/root"),
        ("/models_old/a", "/models_old/a"),  # only a whole leading /models component
        ("/data/models/a", "/data/models/a"),
        ("relative/a", "relative/a"),
    ],
)
def test_models_root_mapping(base_path: str, expected: str) -> None:
    assert map_base_path(base_path, Path("/root")) == Path(expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model_config_list { config { name: 'a' base_pat: '/x' } }", 'no field named "base_pat"'),
        ("model_config_list { config { name: 'a' } }", "has no base_path"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } "
            "config { name: 'a' base_path: '/y' } }",
            "configured twice",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
            "model_platform 'onnx' unsupported",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_version_policy "
            "{ latest { num_versions: 0 } } } }",
            "num_versions must be >= 1",
        ),
        ("model_config_list { config { name: 'a b' base_path: '/x' } }", "invalid characters"),
        ("model_config_list { }", "no models configured"),
        ("", "expected a model_config_list"),
    ],
)
def test_bad_model_configs(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"models\.config") as info:
        parse_model_config(text, Path("models.config"), None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_version_policies() -> None:
    assert VersionPolicy("latest", 2).select([1, 2, 3]) == {2, 3}
    assert VersionPolicy("latest", 2).select([]) == set()
    assert VersionPolicy("all").select([1, 5]) == {1, 5}
    assert VersionPolicy("specific", versions=frozenset({1, 4})).select([1, 2, 3]) == {1}


def test_batching_and_monitoring_files() -> None:
    batching = load_batching_config(SERVING / "batching.config")
    assert batching.num_batch_threads >= 1
    # TF Serving refuses a call with more rows than max_batch_size: the gateway's largest call
    # (its instance limit, also its coalescing limit) must fit, or production fails it.
    assert batching.max_batch_size >= GatewayConfig.max_instances
    assert batching.max_enqueued_batches >= 1
    monitoring = load_monitoring_config(SERVING / "monitoring.config")
    assert monitoring.prometheus_enabled
    assert monitoring.prometheus_path == "/monitoring/prometheus/metrics"
    assert not load_monitoring_config(None).prometheus_enabled


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2",
            "allowed_batch_sizes",
        ),
        ("max_batch_size: 8", "max_batch_size"),  # a wrapper, as in TF Serving's proto
        ("batch_size { value: 8 }", "batch_size"),
    ],
)
def test_bad_batching_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_batching_config(path)


def test_missing_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot read monitoring config file"):
        load_monitoring_config(Path("/nonexistent/monitoring.config"))


def test_version_dirs(tmp_path: Path) -> None:
    for name in ("1", "2", "10", ".export-3-abc", "4.partial", "latest", "5"):
        (tmp_path / name).mkdir()
        if name != "5":  # 5: still being copied in, no saved_model.pb yet
            (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "7").write_text("a file, not a version")
    assert scan_versions(tmp_path) == [1, 2, 10]
    assert scan_versions(tmp_path / "missing") == []


def test_tf_serving_flag_syntax() -> None:
    settings = parse_settings(
        [
            "--model_config_file=serving/models.config",
            "--port=9000",
            "--rest_api_port",
            "0",
            "--enable_batching=true",
            "--file_system_poll_wait_seconds=2",
            "--allow_version_labels_for_unavailable_models",
        ]
    )
    assert settings.port == 9000 and settings.rest_api_port == 0
    assert settings.enable_batching and settings.allow_version_labels_for_unavailable_models
    assert settings.file_system_poll_wait_seconds == 2.0
    assert not parse_settings(["--model_config_file=x", "--enable_batching=false"]).enable_batching


@pytest.mark.slow
def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'a' base_path: '/x' oops: 1 } }")
    done = subprocess.run(
        [sys.executable, "-m", "serving.modelserver", f"--model_config_file={config}", "--port=1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("modelserver:")]
    assert len(errors) == 1 and "oops" in errors[0] and str(config) in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_label_on_unavailable_version_needs_the_flag(models_root: Path) -> None:
    # serving/models.config labels canary -> 2; models_root has only version 1.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.modelserver",
            f"--model_config_file={SERVING / 'models.config'}",
            f"--models_root={models_root}",
            "--host=127.0.0.1",
            "--port=1",
            "--rest_api_port=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "--allow_version_labels_for_unavailable_models" in done.stderr
    assert "canary" in done.stderr


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--port=abc"], "--port: expected an integer 0..65535, got 'abc'"),
        (["--port=-1"], "--port: expected an integer 0..65535, got '-1'"),
        (["--rest_api_port=70000"], "--rest_api_port: expected an integer 0..65535"),
        (["--file_system_poll_wait_seconds=-1"], "expected seconds >= 0, got '-1'"),
        (["--file_system_poll_wait_seconds=nan"], "expected seconds >= 0, got 'nan'"),
        (["--model_config_file_poll_wait_seconds=inf"], "expected seconds >= 0"),
        (
            ["--grpc_max_threads=0"],
            "--grpc_max_threads: expected an integer 1..2147483647, got '0'",
        ),
        (
            ["--tensorflow_intra_op_parallelism=-5"],
            "expected an integer 0..2147483647",
        ),  # TF would abort the process
        (
            ["--tensorflow_intra_op_parallelism=2147483648"],
            "0..2147483647, got '2147483648'",
        ),  # int32
        (["--enable_batching=maybe"], "expected true or false"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_are_one_line(
    flags: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(["--model_config_file=serving/models.config", *flags])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and fragment in err, err


def test_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    with pytest.raises(ConfigError, match="not a UTF-8 text proto"):
        load_model_config(path, None)


@pytest.mark.parametrize("which", ["model", "batching", "monitoring"])
def test_bad_config_file_is_one_line_before_tensorflow(tmp_path: Path, which: str) -> None:
    bad = tmp_path / "bad.config"
    bad.write_text("max_batch_size { value: 0 }" if which == "batching" else "oops: 1")
    flags = {
        "model": [f"--model_config_file={bad}"],
        "batching": ["--enable_batching", f"--batching_parameters_file={bad}"],
        "monitoring": [f"--monitoring_config_file={bad}"],
    }[which]
    if which != "model":
        flags.append(f"--model_config_file={SERVING / 'models.config'}")
    done = subprocess.run(
        [sys.executable, "-m", "serving.modelserver", "--port=1", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},  # no TF_CPP_MIN_LOG_LEVEL: TF must not even be imported
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("modelserver: config error:")
    assert str(bad) in done.stderr


def test_a_negative_inter_op_count_is_tensorflows_run_in_the_caller() -> None:
    settings = parse_settings(
        ["--model_config_file=serving/models.config", "--tensorflow_inter_op_parallelism=-1"]
    )
    assert settings.inter_op_parallelism == -1
