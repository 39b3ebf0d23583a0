"""Declarative checks of estimator parameters, with one message template.

"The 'alpha' parameter of ALE must be a float in (0, 1). Got 2 instead."
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from alemap.exceptions import ParameterError

__all__ = ["Interval", "Options", "validate"]


@dataclass(frozen=True)
class Interval:
    """A number in an interval; ``closed`` says which ends are included."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right", "neither"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        want = numbers.Integral if self.kind is int else numbers.Real
        if not isinstance(value, want):
            return False
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{'an int' if self.kind is int else 'a float'} in {left}{lo}, {hi}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


def validate(owner: str, constraints: dict, params: dict) -> None:
    """Raise :class:`ParameterError` for the first parameter that breaks its constraint."""
    for name, constraint in constraints.items():
        value = params[name]
        allowed = constraint if isinstance(constraint, (list, tuple)) else (constraint,)
        if any(c is None and value is None or c is not None and c.accepts(value) for c in allowed):
            continue
        text = " or ".join("None" if c is None else str(c) for c in allowed)
        raise ParameterError(f"The {name!r} parameter of {owner} must be {text}. Got {value!r} instead.")
