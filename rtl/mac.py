"""The sequential MAC: an FMAq feeding a register, and with cfg.chunk_size the chunked variant of docs §5.

Timing (docs/rtl.md, "MAC"):

- Plain (chunk_size None): on a clock edge with ``valid`` the register takes FMAq(a, b, acc), or FMAq(a, b, +0)
  when ``clear`` is high in the same cycle; ``clear`` without ``valid`` sets it to +0. ``acc`` is the register,
  so it shows the dot product one cycle after its last valid product.
- Chunked (chunk_size n): a partial register accumulates the current chunk, a total register holds the
  chunk-adder fold of every completed chunk, and a counter counts the chunk's products. A completed chunk is
  folded into the total by the first valid product after it (which starts the next chunk from +0), so the
  FMAq and the chunk adder never chain in one cycle. ``acc`` is an output register loaded every cycle with
  R_acc(total + partial) through the chunk adder; it shows the dot product two cycles after the last valid
  product, and an empty dot product (clear, then nothing) as +0.
"""

from __future__ import annotations

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lba_core import DatapathPlan, MacConfig

from .blocks import add_block
from .fmaq import ChunkAdder, ConfiguredComponent, FMAq
from .plan import component_plan


class Register(wiring.Component):
    """A clock-enabled register, reset to 0 (+0 for accumulator codes): the MAC's "register" block."""

    def __init__(self, width: int):
        super().__init__({"d": In(width), "en": In(1), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.q.eq(self.d)
        return m


def mac_ports(cfg: MacConfig) -> dict:
    """Ports of every sequential MAC (plain, chunked, pipelined, fixed point): valid, clear, a, b in, acc out."""
    return {
        "valid": In(1),
        "clear": In(1),
        "a": In(cfg.a_format.width),
        "b": In(cfg.b_format.width),
        "acc": Out(cfg.acc.width),
    }


def accumulate_into_register(m: Module, step, valid, clear, acc_out) -> Register:
    """The plain MAC loop around a combinational step (acc_in -> acc_out): on valid the register takes the
    step's result, from +0 when clear is high in the same cycle; clear alone sets it to +0."""
    register = add_block(m, Register(len(acc_out)))
    m.d.comb += [
        step.acc_in.eq(Mux(clear, 0, register.q)),
        register.d.eq(Mux(valid, step.acc_out, 0)),
        register.en.eq(valid | clear),
        acc_out.eq(register.q),
    ]
    return register


class MAC(ConfiguredComponent):
    """Sequential multiply-accumulate over valid (a, b) pairs; ``clear`` starts a new dot product from +0.

    Ports: ``valid``, ``clear``, ``a``, ``b`` in, registered ``acc`` out (plus the sync domain's clk and rst).
    """

    def __init__(self, cfg: MacConfig, *, plan: DatapathPlan | None = None):
        self.plan = component_plan(cfg, plan)
        self.fmaq = FMAq(cfg, plan=self.plan)
        self.cfg = cfg
        super().__init__(mac_ports(cfg))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fmaq = fmaq = self.fmaq  # a composite: its blocks are reported one by one
        m.d.comb += [fmaq.a.eq(self.a), fmaq.b.eq(self.b)]
        if self.cfg.chunk_size is None:
            accumulate_into_register(m, fmaq, self.valid, self.clear, self.acc)
        else:
            self.elaborate_chunked(m, fmaq, self.cfg.chunk_size)
        return m

    def elaborate_chunked(self, m: Module, fmaq: FMAq, chunk_size: int) -> None:
        width = self.cfg.acc.width
        chunk_adder = add_block(m, ChunkAdder(self.cfg, plan=self.plan))
        partial = add_block(m, Register(width), "partial")
        total = add_block(m, Register(width), "total")
        count = add_block(m, Register(chunk_size.bit_length()), "count")
        out = add_block(m, Register(width))
        chunk_full = count.q == chunk_size
        new_chunk = self.clear | chunk_full
        m.d.comb += [
            chunk_adder.acc_in.eq(total.q),
            chunk_adder.addend.eq(partial.q),
            fmaq.acc_in.eq(Mux(new_chunk, 0, partial.q)),
            partial.d.eq(Mux(self.valid, fmaq.acc_out, 0)),
            partial.en.eq(self.valid | self.clear),
            count.d.eq(Mux(self.valid, Mux(new_chunk, 1, count.q + 1), 0)),
            count.en.eq(self.valid | self.clear),
            # Fold the completed chunk when the next one starts; clear empties the total.
            total.d.eq(Mux(self.clear, 0, chunk_adder.acc_out)),
            total.en.eq(self.clear | (self.valid & chunk_full)),
            out.d.eq(chunk_adder.acc_out),
            out.en.eq(1),
            self.acc.eq(out.q),
        ]
