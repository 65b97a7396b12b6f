"""The pipelined MAC: register stages between the product and the accumulation loop (as FPnew and FloPoCo do).

``PipelinedMAC(cfg, stages)`` computes exactly what :class:`rtl.mac.MAC` computes, ``stages`` cycles later:

- ``stages=1``: one register holds the (rounded) product, with ``valid`` and ``clear``, before the loop;
- ``stages=2``: a second register holds the exact product between the multiplier and the product rounder
  (with an exact product, ``cfg.product`` None, the two registers only add latency).

The accumulation itself (align, add, normalize, round, saturate, then the register) stays a one-cycle
recurrence: its delay (the register-to-register path) bounds Fmax once the product is registered. The
products enter the loop in their original order, so the summation order, and with it the arithmetic
contract, is unchanged; ``acc`` shows a dot product ``1 + stages`` cycles after its last valid product.
Pipelining the loop itself (interleaved accumulators) would change the order and is not done here.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Module, Mux

from lba_core import ConfigError, DatapathPlan, MacConfig

from .blocks import Multiplier, add_block
from .fmaq import ConfiguredComponent, build_accumulate, round_product
from .mac import Register, mac_ports
from .plan import component_plan

PIPELINE_STAGES = (0, 1, 2)


def check_pipeline(cfg: MacConfig, stages: int) -> None:
    """A ConfigError naming the option when ``stages`` cannot be built for ``cfg``."""
    if stages not in PIPELINE_STAGES:
        raise ConfigError(f"--pipeline must be one of {', '.join(map(str, PIPELINE_STAGES))}, got {stages}")
    if stages and cfg.chunk_size is not None:
        raise ConfigError("--pipeline with --chunk is not supported: pipeline the plain MAC")
    if stages and cfg.fixed_acc:
        raise ConfigError("--pipeline applies to floating-point accumulators only")


def _registered(m: Module, role: str, fields: dict, enable=1) -> SimpleNamespace:
    """One Register block (``<role>_register``) holding ``fields`` (name -> signal); returns the outputs."""
    width = sum(len(signal) for signal in fields.values())
    register = add_block(m, Register(width), role)
    m.d.comb += [register.d.eq(Cat(*fields.values())), register.en.eq(enable)]
    outputs, offset = {}, 0
    for name, signal in fields.items():
        outputs[name] = register.q[offset:offset + len(signal)]
        offset += len(signal)
    return SimpleNamespace(**outputs)


class PipelinedMAC(ConfiguredComponent):
    """The plain MAC with ``stages`` product registers before the accumulation loop; same ports as MAC."""

    def __new__(cls, cfg: MacConfig, stages: int, *, plan: DatapathPlan | None = None):
        check_pipeline(cfg, stages)  # before the object exists (no never-elaborated component is left behind)
        if stages == 0:
            raise ConfigError("PipelinedMAC needs 1 or 2 stages; the plain MAC is rtl.MAC")
        return super().__new__(cls, cfg, stages, plan=plan)

    def __init__(self, cfg: MacConfig, stages: int, *, plan: DatapathPlan | None = None):
        self.plan = component_plan(cfg, plan)
        self.cfg = cfg
        self.stages = stages
        super().__init__(mac_ports(cfg))

    @property
    def latency(self) -> int:
        """Cycles from a valid product to the accumulator register showing it."""
        return 1 + self.stages

    def elaborate(self, platform):
        m = Module()
        cfg, plan = self.cfg, self.plan
        multiplier = add_block(m, Multiplier(plan))
        m.d.comb += [multiplier.a.eq(self.a), multiplier.b.eq(self.b)]
        control = SimpleNamespace(valid=self.valid, clear=self.clear)

        def operand(source):
            return {"sign": source.sign, "zero": source.zero, "sig": source.sig, "exp": source.exp}

        product = multiplier
        if self.stages == 2:
            staged = _registered(m, "product", {**operand(product), "valid": control.valid, "clear": control.clear})
            product, control = staged, staged
        if cfg.product is not None:
            product = round_product(m, plan, product)
        staged = _registered(m, "addend", {**operand(product), "valid": control.valid, "clear": control.clear})
        acc = add_block(m, Register(cfg.acc.width))
        acc_in = Mux(staged.clear, 0, acc.q)
        result = build_accumulate(m, plan, acc_in, staged, plan.product_sig_bits, plan.window_bits)
        m.d.comb += [
            acc.d.eq(Mux(staged.valid, result.acc_out, 0)),
            acc.en.eq(staged.valid | staged.clear),
            self.acc.eq(acc.q),
        ]
        return m
