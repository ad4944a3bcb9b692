"""The one type checker: every supported annotation, its canonical values and its messages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest

from ablate.errors import ConfigError
from ablate.typecheck import check, check_fields, yaml_float

Colour = Literal["red", "green", "blue"]


def _error(annotation: object, value: object, path: str = "a.b") -> str:
    with pytest.raises(ConfigError) as info:
        check(annotation, value, path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("annotation", "value", "expected"), [
    (int, 3, 3),
    (int, np.int64(3), 3),
    (float, 2, 2.0),
    (float, np.float32(0.5), 0.5),
    (float, "1e-3", 1e-3),  # YAML 1.1 reads this as a string
    (float, "2.5E+2", 250.0),
    (bool, False, False),
    (str, "x", "x"),
    (Colour, "green", "green"),
    (int | None, None, None),
    (int | None, 4, 4),
    (list[int], (1, 2), [1, 2]),
    (tuple[float, ...], [1, 2.5], (1.0, 2.5)),
    (Sequence[Colour], ["blue", "red"], ["red", "blue"]),  # a subset, in declared order
])
def test_values_come_back_canonical(annotation: object, value: object, expected: object) -> None:
    got = check(annotation, value, "k")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("annotation", "value", "message"), [
    (int, True, "a.b: expected int, got bool (True)"),
    (int, 1.0, "a.b: expected int, got float (1.0)"),
    (int, "1e3", "a.b: expected int, got str ('1e3')"),
    (float, True, "a.b: expected float, got bool (True)"),
    (float, "0.1", "a.b: expected float, got str ('0.1')"),  # quoted: meant as a string
    (float, "inf", "a.b: expected float, got str ('inf')"),
    (float, math.nan, "a.b: expected a finite number, got nan"),
    (float, "1e999", "a.b: expected a finite number, got inf"),
    (bool, 0, "a.b: expected bool, got int (0)"),
    (str, 3, "a.b: expected str, got int (3)"),
    (Colour, "pink", "a.b: expected one of red, green, blue, got 'pink'"),
    (Literal[1, 2], True, "a.b: expected one of 1, 2, got True"),
    (int | None, "x", "a.b: expected int or null, got str ('x')"),
    (Colour | None, "pink", "a.b: expected one of red, green, blue or null, got str ('pink')"),
    (float | None, math.inf, "a.b: expected a finite number, got inf"),
    (list[int], "12", "a.b: expected list of int, got str ('12')"),
    (list[int], [1, "2"], "a.b[1]: expected int, got str ('2')"),
])
def test_wrong_values_are_one_line_naming_the_path(annotation: object, value: object,
                                                   message: str) -> None:
    assert _error(annotation, value) == message


def test_a_list_of_choices_is_a_non_empty_subset_named_after_its_key() -> None:
    allowed = "allowed: red, green, blue"
    assert _error(list[Colour], ["pink"], "paint.colours") == (
        f"paint.colours: unknown colour 'pink'; {allowed}")
    assert _error(list[Colour], [], "paint.colours") == (
        f"paint.colours: expected at least one colour; {allowed}")
    assert _error(list[Colour], ["red", "red"], "paint.colours") == (
        "paint.colours: colour 'red' is listed twice")


def test_unsupported_annotations_are_a_programming_error() -> None:
    for annotation in (dict[str, int], tuple[int, str], object, int | object):
        with pytest.raises(TypeError, match="unsupported annotation"):
            check(annotation, "1", "k")


def test_a_union_takes_the_first_alternative_the_value_fits() -> None:
    from typing import Literal

    assert check(int | Literal["auto"], "auto", "k") == "auto"
    assert check(int | Literal["auto"], 3, "k") == 3
    assert _error(int | Literal["auto"], "all", "k") == (
        "k: expected int or one of auto, got str ('all')")
    assert check(float | None, None, "k") is None


@dataclass(frozen=True)
class Inner:
    width: int = 2
    colour: Colour = "red"


@dataclass(frozen=True)
class Outer:
    rate: float = 0.1
    inner: Inner = field(default_factory=Inner)
    tags: tuple[str, ...] = ()


def test_check_fields_checks_only_the_given_keys() -> None:
    assert check_fields(Outer, {"rate": 1}, "outer") == {"rate": 1.0}
    assert check_fields(Outer, None, "outer") == {}


def test_nested_dataclasses_are_built_from_mappings() -> None:
    outer = check(Outer, {"inner": {"width": 5}, "tags": ["a"]}, "outer")
    assert outer == Outer(inner=Inner(width=5), tags=("a",))
    assert _error(Outer, {"inner": {"colour": "teal"}}, "outer") == (
        "outer.inner.colour: expected one of red, green, blue, got 'teal'")
    assert _error(Outer, {"inner": [1]}, "outer") == (
        "outer.inner: expected a mapping, got list ([1])")


def test_unknown_keys_suggest_the_closest_field() -> None:
    with pytest.raises(ConfigError) as info:
        check_fields(Outer, {"rtae": 0.2}, "outer")
    assert str(info.value) == (
        "outer.rtae: unknown key; did you mean 'rate'? Allowed: inner, rate, tags")
    with pytest.raises(ConfigError) as info:
        check_fields(Inner, {"size": 1}, "outer.inner", what="option")
    assert str(info.value) == "outer.inner.size: unknown option; allowed: colour, width"


def test_yaml_float_reads_only_what_yaml_1_1_misreads() -> None:
    assert yaml_float("1e-3") == 1e-3
    assert yaml_float("-2E5") == -2e5
    assert yaml_float("1.5") == "1.5"  # YAML 1.1 reads 1.5 itself; a string was quoted
    assert yaml_float("nan") == "nan" and yaml_float("epochs") == "epochs"
    assert yaml_float(3) == 3
