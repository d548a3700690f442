"""`validate_ilrec_layers`, the one check of `ILRecConfig.ilrec_layers` (with and without the model's depth)."""

import pytest

from ilrec_trl.layers import validate_ilrec_layers


def test_valid_layers_and_their_positions():
    assert validate_ilrec_layers([-2, -3]) == [-2, -3]
    assert validate_ilrec_layers(-2) == [-2]
    assert validate_ilrec_layers((0, 2, -2), num_layers=6) == [0, 2, 4]


@pytest.mark.parametrize("layers, num_layers, match", [
    ([], None, "at least one decoder layer"),
    ([1.0], None, "integer layer index"),
    ([True], None, "integer layer index"),
    ([1, 1], None, "only once"),
    ([-1], None, "only the final decoder layer"),
    ([6], 6, "contains 6, but the model has 6 decoder layers"),
    ([-7], 6, "contains -7"),
    ([-1, 5], 6, "names the same decoder layer twice"),
    ([5], 6, r"only the final decoder layer \(of the model's 6\)"),
])
def test_invalid_layers_say_what_is_wrong(layers, num_layers, match):
    with pytest.raises(ValueError, match=match):
        validate_ilrec_layers(layers, num_layers)
