"""Counters of the accumulator's events (docs/arithmetic.md §4), filled by the bit-true GEMM.

One *step* is one rounding R_acc of the chain: every FMAq and, with chunking, every chunk-adder step. A step
counts once per event it raised (overflow, underflow, swamp), so the rates are fractions of steps.

Fused (tensor-core) accumulators (docs/arithmetic.md §9) round once per group: their steps are the FDPA and
promotion roundings, and instead of swamping they report truncation (:meth:`EventStats.record_truncation`):
how many non-zero product terms were truncated to zero, and the share of the product mass sum |a*b| that
truncation removed.
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
    terms: int = 0  # fused accumulators: non-zero product terms
    terms_zeroed: int = 0  # ... of which truncated to zero
    mass: float = 0.0  # ... the sum of their |a*b|
    mass_truncated: float = 0.0  # ... and the part of it truncation removed

    def record(self, steps: int, overflow: int, underflow: int, swamp: int) -> None:
        """Add the counts of one GEMM (or any batch of steps)."""
        counts = (steps, overflow, underflow, swamp)
        if any(count < 0 for count in counts):
            raise ValueError(f"event counts must be non-negative, got {counts}")
        self.steps += int(steps)
        self.overflow += int(overflow)
        self.underflow += int(underflow)
        self.swamp += int(swamp)

    def record_truncation(self, terms: int, zeroed: int, mass: float, truncated: float) -> None:
        """Add a fused GEMM's truncation counts: non-zero product terms, those truncated to zero, their summed
        |a*b| and the part of it truncated away (docs/arithmetic.md §9)."""
        if terms < 0 or zeroed < 0 or zeroed > terms or mass < 0 or truncated < 0:
            raise ValueError(f"truncation counts must be non-negative with zeroed <= terms, got {(terms, zeroed, mass, truncated)}")
        self.terms += int(terms)
        self.terms_zeroed += int(zeroed)
        self.mass += float(mass)
        self.mass_truncated += float(truncated)

    def merge(self, other: EventStats) -> EventStats:
        """Add ``other``'s counts into this one (in place) and return self, so merges chain."""
        if not isinstance(other, EventStats):
            raise TypeError(f"EventStats.merge expects an EventStats, got {type(other).__name__}")
        self.record(other.steps, other.overflow, other.underflow, other.swamp)
        self.record_truncation(other.terms, other.terms_zeroed, other.mass, other.mass_truncated)
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
    def zeroed_term_rate(self) -> float:
        """Fused accumulators: the fraction of non-zero product terms truncated to zero (0.0 before any)."""
        return self.terms_zeroed / self.terms if self.terms else 0.0

    @property
    def truncated_mass_share(self) -> float:
        """Fused accumulators: the share of the product mass sum |a*b| that truncation removed (0.0 before any)."""
        return self.mass_truncated / self.mass if self.mass else 0.0

    @property
    def rates(self) -> dict[str, float]:
        return {event: self.rate(event) for event in EVENTS}

    def as_dict(self) -> dict[str, float]:
        """Counts and rates as one flat, JSON-ready dict (``overflow``, ``overflow_rate``, ...)."""
        data: dict[str, float] = {"steps": self.steps}
        for event in EVENTS:
            data[event] = getattr(self, event)
            data[f"{event}_rate"] = self.rate(event)
        if self.terms:  # fused accumulators only, so that the sequential chains' rows keep their columns
            data.update(terms=self.terms, terms_zeroed=self.terms_zeroed, zeroed_term_rate=self.zeroed_term_rate,
                        truncated_mass_share=self.truncated_mass_share)
        return data
