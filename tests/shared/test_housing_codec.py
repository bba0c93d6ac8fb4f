"""serving.codecs.housing: housing instances -> float32 {"wide": [N, 5], "deep": [N, 6]}.

The gateway's HTTP answers for the same inputs are in tests/gateway (test_errors, test_predict);
the client's in tests/client.
"""

from __future__ import annotations

import numpy as np
import pytest

from serving.codecs import CodecError
from serving.codecs.housing import HousingInputError, ModelCardMissingError, features_to_inputs
from tests.helpers.housing import HOUSING_ROW
from training.data.housing import DEEP_FEATURES, FEATURE_NAMES, WIDE_FEATURES

GROUPS = {"wide": tuple(WIDE_FEATURES), "deep": tuple(DEEP_FEATURES)}
NAMES = tuple(FEATURE_NAMES)


def test_named_features_are_split_by_the_card_in_its_order() -> None:
    shuffled = dict(reversed(list(HOUSING_ROW.items())))
    inputs = features_to_inputs([shuffled, HOUSING_ROW], GROUPS, NAMES)
    assert set(inputs) == {"wide", "deep"}
    for name, members in GROUPS.items():
        expected = np.array([[HOUSING_ROW[f] for f in members]] * 2, dtype=np.float32)
        assert inputs[name].dtype == np.float32
        np.testing.assert_array_equal(inputs[name], expected)


def test_explicit_inputs_need_no_card_and_mix_with_named_features() -> None:
    explicit = {"wide": [1, 2, 3, 4, 5], "deep": [1.5] * 6}
    without_card = features_to_inputs([explicit], None, None)
    assert without_card["wide"].tolist() == [[1, 2, 3, 4, 5]]
    mixed = features_to_inputs([HOUSING_ROW, explicit], GROUPS, NAMES)
    assert mixed["wide"].shape == (2, 5) and mixed["deep"].shape == (2, 6)


@pytest.mark.parametrize(
    ("instance", "code", "needles"),
    [
        ({k: v for k, v in HOUSING_ROW.items() if k != "Latitude"}, "missing_feature",
         ["instance 1: missing feature 'Latitude'"]),
        ({**HOUSING_ROW, "Rooms": 3}, "unknown_feature", ["instance 1: unknown feature 'Rooms'"]),
        ({**HOUSING_ROW, "MedInc": "high"}, "invalid_instance",
         ["feature 'MedInc' must be a number, got the string 'high'"]),
        ({**HOUSING_ROW, "HouseAge": True}, "invalid_instance", ["'HouseAge'", "a boolean"]),
        # named: the feature is named (AveRooms is in both inputs; a column would mislead)
        ({**HOUSING_ROW, "MedInc": 1e300}, "invalid_instance",
         ["instance 1: feature 'MedInc' is 1e+300, not a finite float32"]),
        ({**HOUSING_ROW, "AveRooms": -1e39}, "invalid_instance",
         ["instance 1: feature 'AveRooms' is -1e+39, not a finite float32"]),
        ({"wide": [1e300, 1, 1, 1, 1], "deep": [1] * 6}, "invalid_instance",
         ["instance 1: wide[0] is 1e+300, not a finite float32"]),
        ([1, 2], "invalid_instance", ["instance 1: expected an object of features"]),
        ({"wide": [1] * 5}, "missing_feature", ["instance 1: missing input 'deep'"]),
        ({"wide": [1] * 4, "deep": [1] * 6}, "invalid_instance",
         ["'wide' must be a list of 5 numbers, got a list of 4"]),
    ],
)  # fmt: skip
def test_bad_instances_name_the_instance_and_carry_the_gateway_code(
    instance, code: str, needles: list[str]
) -> None:
    with pytest.raises(HousingInputError) as caught:
        features_to_inputs([HOUSING_ROW, instance], GROUPS, NAMES)
    assert isinstance(caught.value, CodecError)  # what the client catches
    assert caught.value.code == code
    for needle in needles:
        assert needle in str(caught.value), (needle, str(caught.value))


def test_ragged_explicit_inputs_without_a_card_are_refused() -> None:
    ragged = [{"wide": [1] * 5, "deep": [1] * 6}, {"wide": [1] * 4, "deep": [1] * 6}]
    with pytest.raises(HousingInputError, match=r"'wide' rows have different lengths \[4, 5\]"):
        features_to_inputs(ragged, None, None)


def test_named_features_without_a_card_raise_their_own_error() -> None:
    with pytest.raises(ModelCardMissingError) as caught:
        features_to_inputs([{"wide": [1] * 5, "deep": [1] * 6}, HOUSING_ROW], None, None)
    assert caught.value.index == 1
    assert caught.value.code == "model_card_missing"
