"""Client input parsing and output formatting, without servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.errors import EXIT_USAGE, ClientError
from client.housing import card_from_path, split_features
from client.inputs import parse_feature_string, read_feature_csv
from client.output import format_table
from tests.helpers.housing import HOUSING_ROW

CARD = {
    "feature_names": list(HOUSING_ROW),
    "input_features": {"wide": list(HOUSING_ROW)[:5], "deep": list(HOUSING_ROW)[2:]},
}


def test_parse_feature_string() -> None:
    assert parse_feature_string(" MedInc = 8.5 , HouseAge=41,") == {"MedInc": 8.5, "HouseAge": 41.0}
    for text, needle in [
        ("MedInc", "NAME=VALUE"),
        ("=3", "NAME=VALUE"),
        ("MedInc=1,MedInc=2", "twice"),
        ("MedInc=x", "not a number"),
        ("MedInc=inf", "finite"),
    ]:
        with pytest.raises(ClientError, match=needle) as info:
            parse_feature_string(text)
        assert info.value.exit_code == EXIT_USAGE


def test_read_feature_csv(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("HouseAge,MedInc\n41,8.5\n\n10,2\n")
    assert read_feature_csv(path) == [
        {"HouseAge": 41.0, "MedInc": 8.5},
        {"HouseAge": 10.0, "MedInc": 2.0},
    ]
    cases = {
        "": "empty CSV",
        "MedInc\n": "no data rows",
        "MedInc,MedInc\n1,2\n": "duplicate",
        "MedInc,HouseAge\n1\n": "rows.csv:2",
        "MedInc\nabc\n": "rows.csv:2 MedInc: not a number",
    }
    for text, needle in cases.items():
        path.write_text(text)
        with pytest.raises(ClientError, match=needle):
            read_feature_csv(path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ClientError, match="UTF-8"):
        read_feature_csv(path)


def test_split_features_follows_the_card() -> None:
    shuffled = dict(reversed(list(HOUSING_ROW.items())))
    inputs = split_features(CARD, [shuffled, HOUSING_ROW], "--csv x")
    assert inputs["wide"].shape == (2, 5) and inputs["deep"].shape == (2, 6)
    assert inputs["wide"].dtype.name == "float32"
    assert inputs["wide"][0].tolist() == pytest.approx(
        [HOUSING_ROW[n] for n in CARD["input_features"]["wide"]]
    )
    assert (inputs["deep"][0] == inputs["deep"][1]).all()
    with pytest.raises(ClientError, match="x: instance 0: missing feature 'Longitude'"):
        split_features(CARD, [{k: v for k, v in HOUSING_ROW.items() if k != "Longitude"}], "x")


def test_card_from_path(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no such model card"):
        card_from_path(tmp_path / "nope.json")
    not_housing = tmp_path / "card.json"
    not_housing.write_text('{"name": "fashion_mnist"}')
    with pytest.raises(ClientError, match="not a housing model"):
        card_from_path(not_housing)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ClientError, match="unreadable"):
        card_from_path(broken)


def test_format_table_aligns_numbers_right() -> None:
    lines = format_table(["name", "value"], [["a", "1.5"], ["long name", "10.25"]]).splitlines()
    assert lines[0].startswith("name") and lines[1].startswith("---------")
    assert lines[2].endswith("  1.5") and lines[3].endswith("10.25")
