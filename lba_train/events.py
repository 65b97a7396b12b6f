"""Counters of the accumulator's events (docs/arithmetic.md §4), filled by the bit-true GEMM.

One *step* is one rounding R_acc of the chain: every FMAq and, with chunking, every chunk-adder step. A step
counts once per event it raised (overflow, underflow, swamp), so the rates are fractions of steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

EVENTS = ("overflow", "underflow", "swamp")


@dataclass
class EventStats:
    """Running totals of accumulation steps and of the steps that raised each event."""

    steps: int = 0
    overflow: int = 0
    underflow: int = 0
    swamp: int = 0

    def record(self, steps: int, overflow: int, underflow: int, swamp: int) -> None:
        """Add the counts of one GEMM (or any batch of steps)."""
        counts = (steps, overflow, underflow, swamp)
        if any(count < 0 for count in counts):
            raise ValueError(f"event counts must be non-negative, got {counts}")
        self.steps += int(steps)
        self.overflow += int(overflow)
        self.underflow += int(underflow)
        self.swamp += int(swamp)

    def merge(self, other: EventStats) -> EventStats:
        """Add ``other``'s counts into this one (in place) and return self, so merges chain."""
        if not isinstance(other, EventStats):
            raise TypeError(f"EventStats.merge expects an EventStats, got {type(other).__name__}")
        self.record(other.steps, other.overflow, other.underflow, other.swamp)
        return self

    def reset(self) -> None:
        for field in fields(self):
            setattr(self, field.name, 0)

    def rate(self, event: str) -> float:
        """Fraction of steps that raised ``event`` (0.0 before any step)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; choose one of {', '.join(EVENTS)}")
        return getattr(self, event) / self.steps if self.steps else 0.0

    @property
    def overflow_rate(self) -> float:
        return self.rate("overflow")

    @property
    def underflow_rate(self) -> float:
        return self.rate("underflow")

    @property
    def swamp_rate(self) -> float:
        return self.rate("swamp")

    @property
    def rates(self) -> dict[str, float]:
        return {event: self.rate(event) for event in EVENTS}

    def as_dict(self) -> dict[str, float]:
        """Counts and rates as one flat, JSON-ready dict (``overflow``, ``overflow_rate``, ...)."""
        data: dict[str, float] = {"steps": self.steps}
        for event in EVENTS:
            data[event] = getattr(self, event)
            data[f"{event}_rate"] = self.rate(event)
        return data
