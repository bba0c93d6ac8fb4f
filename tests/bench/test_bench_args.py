"""The benchmarks' argument checks: a bad argument stops them with one line before any load."""

from __future__ import annotations

import pytest

from tests.bench import gateway, modelserver


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--seconds", "0"], "--seconds: expected seconds > 0, got '0'"),
        (["--naive-workers", "0"], "--naive-workers: expected an integer >= 1"),
        (["--naive-seconds", "nan"], "--naive-seconds: expected seconds > 0, got 'nan'"),
        (["--connections", "0"], "--connections: connection counts must be >= 1"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_gateway_bench_refuses_in_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        gateway.parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and fragment in err, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--clients", "0,16"], "--clients must be integers >= 1"),  # 0 clients used to run
        (["--clients", "abc"], "--clients must be integers >= 1"),
        (["--modes", "off,onn"], "--modes must be among off,on,ceiling"),  # "onn" ran as "off"
        (["--warmup", "-1"], "--warmup: expected seconds >= 0, got '-1'"),
    ],
)
def test_modelserver_bench_refuses_in_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = modelserver.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
