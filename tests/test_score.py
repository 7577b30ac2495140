"""The score policy: pure functions, no I/O, no torch."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightning_bestlink._score import check_mode, check_ties, is_better, to_score


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (-2, -2.0), (0.5, 0.5), (Fraction(1, 4), 0.25), (Decimal("1.5"), 1.5), (math.inf, math.inf)],
)
def test_to_score_numbers(value: Any, expected: float) -> None:
    result = to_score(value)
    assert result == expected and type(result) is float


def test_to_score_nan_passes_through() -> None:
    assert math.isnan(to_score(float("nan")))


@pytest.mark.parametrize("value", ["0.5", b"1", None, True, False, [1.0], (1.0,), {"x": 1}, 1 + 2j, object()])
def test_to_score_rejects(value: Any) -> None:
    with pytest.raises(TypeError, match=r"^score must be a real number"):
        to_score(value)


def test_to_score_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^state\['best_score'\] must be"):
        to_score("x", name="state['best_score']")


def test_to_score_numpy() -> None:
    np = pytest.importorskip("numpy")
    assert to_score(np.float16(0.5)) == 0.5
    assert to_score(np.float32(0.25)) == 0.25
    assert to_score(np.int32(7)) == 7.0
    assert to_score(np.array(1.5)) == 1.5  # 0-d array
    assert to_score(np.array([[2.0]])) == 2.0  # one element, any shape
    assert type(to_score(np.float64(1))) is float
    with pytest.raises(ValueError, match=r"^score must hold exactly one number.*\(2, 2\).*4 elements"):
        to_score(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="score must hold exactly one number"):
        to_score(np.zeros(0))
    with pytest.raises(TypeError, match="score must be a real number"):
        to_score(np.bool_(False))
    with pytest.raises(TypeError, match="score must be a real number"):
        to_score(np.complex128(1 + 1j))
    with pytest.raises(TypeError, match="score must be a real number"):
        to_score(np.array("0.5"))


@pytest.mark.torch
def test_to_score_torch() -> None:
    torch = pytest.importorskip("torch")
    assert to_score(torch.tensor(0.5)) == 0.5
    assert to_score(torch.tensor([0.5])) == 0.5
    assert to_score(torch.tensor(3, dtype=torch.int64)) == 3.0
    assert to_score(torch.tensor(0.5, requires_grad=True) * 2) == 1.0
    assert type(to_score(torch.tensor(0.5, dtype=torch.bfloat16))) is float
    with pytest.raises(ValueError, match=r"score must hold exactly one number.*\(3,\)"):
        to_score(torch.ones(3))
    with pytest.raises(TypeError, match="score must be a real number"):
        to_score(torch.tensor(True))


class Duck:
    """Something with ``item()`` and ``numel()``, like a tensor from another library."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def numel(self) -> int:
        return len(self.values)

    def item(self) -> float:
        assert len(self.values) == 1
        return self.values[0]


def test_to_score_duck_typed_tensor() -> None:
    assert to_score(Duck([0.75])) == 0.75
    with pytest.raises(ValueError, match="exactly one number"):
        to_score(Duck([1.0, 2.0]))


def test_check_mode_and_ties() -> None:
    assert check_mode("min") == "min" and check_mode("max") == "max"
    for bad in ("MIN", "best", None, 1):
        with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
            check_mode(bad)
    assert check_ties("first") == "first" and check_ties("last") == "last"
    with pytest.raises(ValueError, match="ties must be 'first'"):
        check_ties("both")


@pytest.mark.parametrize(
    ("candidate", "best", "mode", "ties", "expected"),
    [
        (1.0, None, "min", "first", True),
        (1.0, None, "max", "first", True),
        (math.nan, None, "min", "first", False),
        (math.nan, 1.0, "max", "last", False),
        (0.5, 1.0, "min", "first", True),
        (1.5, 1.0, "min", "first", False),
        (1.5, 1.0, "max", "first", True),
        (0.5, 1.0, "max", "first", False),
        (1.0, 1.0, "min", "first", False),
        (1.0, 1.0, "max", "first", False),
        (1.0, 1.0, "min", "last", True),
        (1.0, 1.0, "max", "last", True),
        (-math.inf, 0.0, "min", "first", True),
        (math.inf, math.inf, "max", "first", False),
        (0.0, -0.0, "min", "first", False),  # equal
    ],
)
def test_is_better_table(candidate: float, best: float | None, mode: Any, ties: Any, expected: bool) -> None:
    assert is_better(candidate, best, mode, ties) is expected


FLOATS = st.floats(allow_nan=True, allow_infinity=True)


# Properties that hold for any pair of scores; the rule itself is the table above.
@given(candidate=FLOATS, best=FLOATS.filter(lambda b: not math.isnan(b)), mode=st.sampled_from(["min", "max"]))
def test_is_better_properties(candidate: float, best: float, mode: Any) -> None:
    first, last = is_better(candidate, best, mode, "first"), is_better(candidate, best, mode, "last")
    if math.isnan(candidate):
        assert not first and not last  # NaN is never the best
        return
    assert is_better(candidate, best, "min", "first") == is_better(-candidate, -best, "max", "first")  # mirrors
    assert first != last if candidate == best else first == last  # ties decide only between equals
    assert not (first and is_better(best, candidate, mode, "first"))  # never better both ways


@given(st.lists(FLOATS, max_size=30), st.sampled_from(["min", "max"]))
def test_folding_a_sequence_keeps_its_extreme(scores: list[float], mode: Any) -> None:
    best: float | None = None
    for s in scores:
        if is_better(s, best, mode):
            best = s
    finite = [s for s in scores if not math.isnan(s)]
    assert best == ((min(finite) if mode == "min" else max(finite)) if finite else None)
