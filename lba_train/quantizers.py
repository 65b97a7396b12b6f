"""Q_W / Q_A: scale a tensor into an input format, round it there (R_F), and pass gradients straight through.

The MAC computes on the *scaled* values ``R_F(x / s)``; the caller multiplies the MAC's output by
``s_x * s_w`` outside the MAC. Scales are software (they never enter the accumulator); the format is hardware.
See docs/training.md.
"""

from __future__ import annotations

import torch
from torch import nn

from lba_core import FixedFormat, FloatFormat, parse_format

from .quantize import fits_dtype, nan_message, quantize_binary32, round_tensor


class _RoundToFormatSTE(torch.autograd.Function):
    """R_F (RNE, underflow on, saturating) forward; identity backward except where the value saturated."""

    @staticmethod
    def forward(ctx, scaled: torch.Tensor, fmt: FloatFormat, rounding: str, gradient: bool) -> torch.Tensor:
        # A float32 tensor in a format binary32 holds: one compiled pass (NaN check included), float32 out.
        values = quantize_binary32(scaled, fmt) if rounding == "rne" and scaled.dtype == torch.float32 else None
        if values is None:
            if torch.isnan(scaled).any():
                raise ValueError(nan_message(fmt))
            values, _, _ = round_tensor(scaled.detach().to(torch.float64), fmt, rounding, True)
            values = values.to(scaled.dtype if fits_dtype(fmt, scaled.dtype) else torch.float64)
        # Clipped STE: outside [-max, max] the forward is constant, so the gradient is zero there. Skipped
        # when no backward can follow (the mask was 4 % of a simulated MiniLM forward). Compared in the
        # input's dtype where max is one of its numbers (fits_dtype), else in float64.
        if gradient:
            magnitude = scaled.detach().abs()
            if not fits_dtype(fmt, scaled.dtype):
                magnitude = magnitude.to(torch.float64)
            ctx.save_for_backward(magnitude <= float(fmt.max_value))
        return values

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return (grad_output * inside).to(grad_output.dtype), None, None, None


def round_ste(scaled: torch.Tensor, fmt: FloatFormat, rounding: str = "rne") -> torch.Tensor:
    """R_F of ``scaled`` into ``fmt`` with a clipped straight-through gradient."""
    return _RoundToFormatSTE.apply(scaled, fmt, rounding, torch.is_grad_enabled() and scaled.requires_grad)


def l1_bounded_round_ste(scaled: torch.Tensor, fmt, bound: float, channel_dim: int) -> torch.Tensor:
    """A2Q's weight quantization: shrink each channel so that the L1 norm of its scaled values is at most
    ``bound``, then round toward zero into ``fmt`` (which never grows a magnitude, so the rounded channel's
    L1 norm stays within the bound). Gradients pass straight through the shrink factor's input."""
    channels = scaled.transpose(0, channel_dim).reshape(scaled.shape[channel_dim], -1)
    norms = channels.abs().sum(dim=1)
    factor = torch.clamp(bound / torch.clamp(norms, min=torch.finfo(norms.dtype).tiny), max=1.0)
    shape = [1] * scaled.dim()
    shape[channel_dim] = -1
    shrunk = scaled * factor.reshape(shape)
    return round_ste(shrunk, fmt, "rtz")


def max_abs_scale(amax: torch.Tensor, fmt: FloatFormat, power_of_two: bool = False) -> torch.Tensor:
    """The scale s with max|x| / s = max of ``fmt`` (or the smallest power of two with max|x| / s <= max).

    A zero ``amax`` (an all-zero tensor or channel) gets s = 1, so the scaled tensor stays zero.
    """
    amax = amax.detach().to(torch.float64)
    scale = amax / float(fmt.max_value)
    if power_of_two:
        # frexp gives scale = m * 2^e with m in [0.5, 1): 2^e is the smallest power of two >= scale, except
        # that an exact power of two (m = 0.5) is its own answer.
        mantissa, exponent = torch.frexp(scale)
        scale = torch.where(mantissa == 0.5, scale, torch.ldexp(torch.ones_like(scale), exponent))
    return torch.where(amax > 0, scale, torch.ones_like(scale))


class TensorQuantizer(nn.Module):
    """Q(x) = (R_F(x / s), s): a per-tensor (or per-channel) max-abs scale, then rounding into ``fmt``.

    By default the scale follows the tensor it quantizes (dynamic max-abs: for weights this is exact
    calibration; for activations, the batch's own maximum). :meth:`freeze` fixes the range to a calibrated
    ``amax`` (static scaling, what an inference accelerator would use); values beyond it then saturate and
    get a zero gradient. ``per_channel`` keeps one scale per index of dimension ``channel_dim``.
    """

    def __init__(
        self, fmt: FloatFormat | str, per_channel: bool = False, channel_dim: int = 0, power_of_two: bool = False
    ) -> None:
        super().__init__()
        self.fmt = parse_format(fmt)
        self.per_channel = bool(per_channel)
        self.channel_dim = int(channel_dim)
        self.power_of_two = bool(power_of_two)
        #: A2Q (lba_train.ptq.apply_a2q): cap on the L1 norm of each channel's quantized values, or None.
        self.l1_bound: float | None = None
        #: Operand scaling margin (lba_train.bias "margin" mode): the scale is multiplied by 2^margin, so the
        #: scaled operands sit ``margin`` binades below the format's maximum; an exact power-of-two shift,
        #: undone exactly with the rest of the scale after the accumulation.
        self.margin = 0
        self.register_buffer("amax", None)

    @property
    def frozen(self) -> bool:
        return self.amax is not None

    def observed_amax(self, x: torch.Tensor) -> torch.Tensor:
        """max|x| over the tensor, or per index of ``channel_dim``."""
        x = x.detach()
        if not self.per_channel:
            if not x.numel():
                return x.new_zeros(())
            # max(max x, -min x): one pass without the |x| copy (a tenth of abs().max()'s time); NaN stays NaN.
            low, high = torch.aminmax(x)
            return torch.maximum(high, -low)
        magnitude = x.abs()
        return magnitude.transpose(0, self.channel_dim).reshape(magnitude.shape[self.channel_dim], -1).amax(dim=1)

    def freeze(self, amax: torch.Tensor) -> None:
        """Use ``amax`` (from calibration) as the range from now on."""
        self.amax = amax.detach().clone().to(torch.float64)

    def unfreeze(self) -> None:
        self.amax = None

    def scale_for(self, x: torch.Tensor) -> torch.Tensor:
        """The scale, shaped to broadcast against ``x`` (float64)."""
        amax = self.amax if self.frozen else self.observed_amax(x)
        scale = max_abs_scale(amax, self.fmt, self.power_of_two).to(x.device)
        if self.margin:
            scale = torch.ldexp(scale, torch.tensor(self.margin, device=scale.device))
        if self.per_channel:
            shape = [1] * x.dim()
            shape[self.channel_dim] = -1
            scale = scale.reshape(shape)
        return scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale_for(x)
        if self.l1_bound is not None:
            return l1_bounded_round_ste(x / scale.to(x.dtype), self.fmt, self.l1_bound, self.channel_dim), scale
        return round_ste(x / scale.to(x.dtype), self.fmt), scale

    def extra_repr(self) -> str:
        kind = f"per-channel(dim={self.channel_dim})" if self.per_channel else "per-tensor"
        scale = "power-of-two" if self.power_of_two else "exact"
        margin = f", margin 2^-{self.margin}" if self.margin else ""
        return f"{self.fmt.name}, {kind}, {scale} scale{margin}, {'static' if self.frozen else 'dynamic'} max-abs"

