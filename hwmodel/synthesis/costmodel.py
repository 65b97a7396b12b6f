"""An analytical MAC area model from bit widths, fitted by non-negative least squares on synthesized points.

    GE ≈ c_mul·(Ma+1)(Mb+1) + c_shift·W·log2 W + c_add·W + c_exp·E + c_reg·B

- (Ma+1)(Mb+1): the significand multiplier's partial-product array;
- W·log2 W: the aligner's and normalizer's barrel shifters (and the leading-zero counter);
- W: the adder, the rounder's increment and the sticky logic;
- E: the exponent datapath (product exponent, difference, normalization adjust);
- B: the accumulator register (total accumulator bits).

W is the adder width of the RTL (``DatapathPlan.sum_bits`` of lba_core.datapath): the alignment window
max(A + 2, P + 1) plus a carry and a sticky bit, with A = Macc + 1 the accumulator significand and P the
significand of the product entering the aligner. E = E_acc + max(E_a, E_b) is a feature of the model (the
exponent fields' widths), not the RTL's internal exponent width.
There is no constant term: with a fixed input format the multiplier term plays that role.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import nnls

from lba_core import MacConfig, derive_datapath

if TYPE_CHECKING:
    import pandas as pd

TERMS = ("multiplier", "shifter", "adder", "exponent", "register")
#: The bit widths the model reads (columns of the area sweep table).
WIDTH_COLUMNS = ("mult_bits", "datapath_bits", "exp_bits", "acc_bits")


def mac_widths(cfg: MacConfig) -> dict[str, int]:
    """The widths the model uses, for one configuration (from lba_core.derive_datapath, as the RTL's).

    The model describes floating-point MACs: an integer/fixed-point one gets NaN widths (left out of fits)."""
    if cfg.fixed_acc:
        return {name: math.nan for name in WIDTH_COLUMNS}
    datapath = derive_datapath(cfg)
    return {
        "mult_bits": datapath.multiplier_array_bits,
        "datapath_bits": datapath.sum_bits,
        "exp_bits": cfg.acc.exp_bits + max(cfg.a_format.exp_bits, cfg.b_format.exp_bits),
        "acc_bits": cfg.acc.width,
    }


def term_values(widths: Mapping[str, float]) -> np.ndarray:
    datapath = float(widths["datapath_bits"])
    return np.array(
        [widths["mult_bits"], datapath * math.log2(datapath), datapath, widths["exp_bits"], widths["acc_bits"]],
        dtype=float,
    )


@dataclass(frozen=True)
class CostModel:
    """Fitted coefficients (GE per unit of each term) and the fit's relative errors on its own points.

    ``rms_error``/``max_error``: in-sample relative error; ``loo_rms_error``: leave-one-out relative error,
    the honest figure for a format that was not synthesized.
    """

    coefficients: dict[str, float]
    points: int
    rms_error: float
    max_error: float
    loo_rms_error: float

    def predict(self, widths: Mapping[str, float]) -> float:
        return float(term_values(widths) @ np.array([self.coefficients[term] for term in TERMS]))

    def estimate(self, cfg: MacConfig) -> float:
        return self.predict(mac_widths(cfg))


def _solve(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
    # Relative least squares (each point weighted by 1/GE, so small designs count as much as large ones),
    # non-negative: the terms are nearly collinear (W, W log W, register bits), and an unconstrained fit
    # trades them against each other with negative coefficients that extrapolate badly (measured: higher
    # leave-one-out error on the default sweep).
    weights = 1.0 / target
    solution, _ = nnls(matrix * weights[:, None], target * weights)
    return solution


def fit_cost_model(widths: Sequence[Mapping[str, float]], ge: Sequence[float]) -> CostModel:
    """Fit the model to synthesized points; needs more points than terms, and no duplicates."""
    matrix = np.array([term_values(row) for row in widths])
    target = np.asarray(ge, dtype=float)
    if len(target) != len(matrix):
        raise ValueError(f"{len(matrix)} width rows but {len(target)} GE values")
    if len(target) <= len(TERMS):
        raise ValueError(f"the cost model needs more than {len(TERMS)} synthesized points, got {len(target)}")
    if np.any(target <= 0):
        raise ValueError("GE values must be positive")
    solution = _solve(matrix, target)
    relative = matrix @ solution / target - 1
    loo = [
        float(matrix[i] @ _solve(np.delete(matrix, i, axis=0), np.delete(target, i)) / target[i] - 1)
        for i in range(len(target))
    ]
    return CostModel(
        coefficients={term: float(value) for term, value in zip(TERMS, solution)},
        points=len(target),
        rms_error=float(np.sqrt(np.mean(relative**2))),
        max_error=float(np.max(np.abs(relative))),
        loo_rms_error=float(np.sqrt(np.mean(np.square(loo)))),
    )


def sweep_cost_model(df: pd.DataFrame) -> CostModel | None:
    """The cost model fitted on the table's MAC GE, or None when there are too few distinct points."""
    points = df.dropna(subset=list(WIDTH_COLUMNS)).drop_duplicates(subset=list(WIDTH_COLUMNS))
    try:
        return fit_cost_model(points[list(WIDTH_COLUMNS)].to_dict("records"), points["ge"].tolist())
    except ValueError:
        return None


def cost_model_text(model: CostModel | None) -> str:
    if model is None:
        return f"Too few distinct points to fit the cost model (it needs more than {len(TERMS)})."
    terms = " + ".join(f"{value:.3g}·{term}" for term, value in model.coefficients.items())
    return (
        f"GE ≈ {terms} (fitted on {model.points} points; relative error: RMS {100 * model.rms_error:.1f}%, "
        f"max {100 * model.max_error:.1f}%, leave-one-out RMS {100 * model.loo_rms_error:.1f}%). "
        "Terms: multiplier = (Ma+1)(Mb+1), shifter = W·log2 W, adder = W, exponent = E, register = "
        "accumulator bits; see docs/hwmodel.md."
    )
