"""Score policy: turning a value into a float and deciding whether it is better.

Pure functions, no I/O, no torch: a 0-d tensor or a numpy scalar is read through
the methods it exposes (``numel``/``size`` and ``item``), never by importing the
library that made it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Mode = Literal["min", "max"]
Ties = Literal["first", "last"]

MODES: tuple[str, ...] = ("min", "max")
TIES: tuple[str, ...] = ("first", "last")


def check_mode(mode: object) -> Mode:
    """Return ``mode`` if it is ``"min"`` or ``"max"``, else raise ``ValueError``.

    >>> check_mode("max")
    'max'
    >>> check_mode("best")
    Traceback (most recent call last):
    ...
    ValueError: mode must be 'min' or 'max', got 'best'
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode  # type: ignore[return-value]


def check_ties(ties: object) -> Ties:
    """Return ``ties`` if it is ``"first"`` or ``"last"``, else raise ``ValueError``."""
    if ties not in TIES:
        raise ValueError(
            f"ties must be 'first' (an equal score keeps the earlier checkpoint) or "
            f"'last' (an equal score moves the alias), got {ties!r}"
        )
    return ties  # type: ignore[return-value]


def _element_count(value: Any) -> int | None:
    """Number of elements of an array-like, or None when ``value`` is not one."""
    numel = getattr(value, "numel", None)
    if callable(numel):  # torch.Tensor
        return int(numel())
    size = getattr(value, "size", None)
    if isinstance(size, int) and hasattr(value, "shape"):  # numpy array or scalar
        return size
    return None


def to_score(value: Any, *, name: str = "score") -> float:
    """Read one real number out of ``value``, without importing torch or numpy.

    Accepts int, float, numpy scalars and arrays, and tensors holding exactly one
    element (a 0-d tensor is what Lightning logs). NaN and infinities pass through;
    whether they can become the best is :func:`is_better`'s business.

    >>> to_score(3)
    3.0
    >>> to_score("0.5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: score must be a real number (int, float, numpy scalar or 0-d tensor), got str '0.5'; ...
    """
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a real number (int, float, numpy scalar or 0-d tensor), "
            f"got {type(value).__name__} {value!r}; pass float(...) of it if it is a number"
        )
    if isinstance(value, (int, float)):
        return _float(value, name)
    if _masked(value):
        raise ValueError(
            f"{name} is a masked value ({type(value).__name__} {value!r}): it holds no number; "
            f"pass the unmasked value or skip this checkpoint"
        )
    count = _element_count(value)
    if count is not None and count != 1:
        shape = tuple(getattr(value, "shape", ()))
        raise ValueError(
            f"{name} must hold exactly one number, got a {type(value).__name__} of shape "
            f"{shape} ({count} elements); reduce it first, for example with .mean()"
        )
    item = getattr(value, "item", None)
    raw = item() if callable(item) and count is not None else value
    if isinstance(raw, (bool, str, bytes)):  # a bool or str array/tensor: not a score
        raise TypeError(
            f"{name} must be a real number (int, float, numpy scalar or 0-d tensor), "
            f"got {type(value).__name__} {value!r} holding {type(raw).__name__} {raw!r}"
        )
    if isinstance(raw, complex):
        raise TypeError(f"{name} must be a real number, got the complex number {raw!r}")
    try:
        return _float(raw, name)
    except TypeError as err:
        raise TypeError(
            f"{name} must be a real number (int, float, numpy scalar or 0-d tensor), "
            f"got {type(value).__name__} {value!r}"
        ) from err


def _float(value: Any, name: str) -> float:
    """``float(value)``; a number too large for a float is a ``ValueError``, anything else a ``TypeError``."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} is out of range for a float, got {str(value)[:40]}...; pass a finite number"
        ) from None
    except ValueError as err:
        raise TypeError(str(err)) from err


def _masked(value: Any) -> bool:
    """Whether a numpy masked array or scalar hides its number (read without importing numpy)."""
    mask = getattr(value, "mask", None)
    if mask is None or callable(mask) or not callable(getattr(value, "filled", None)):
        return False  # numpy's masked arrays and the masked constant have a mask and filled()
    any_ = getattr(mask, "any", None)
    return bool(any_() if callable(any_) else mask)


def is_better(candidate: float, best: float | None, mode: Mode, ties: Ties = "first") -> bool:
    """Whether ``candidate`` should replace ``best``.

    NaN never becomes the best. With no best yet, any other number does. Equal
    scores keep the first unless ``ties="last"``.

    >>> is_better(0.2, 0.3, "min"), is_better(0.3, 0.3, "min"), is_better(0.3, 0.3, "min", "last")
    (True, False, True)
    >>> is_better(float("nan"), None, "max")
    False
    """
    if math.isnan(candidate):
        return False
    if best is None:
        return True
    if candidate == best:
        return ties == "last"
    return candidate < best if mode == "min" else candidate > best
