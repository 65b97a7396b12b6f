"""The RTL's signal widths equal lba_core.derive_datapath, the one derivation the simulator, the bias rule and
the cost model also read, for 200+ random buildable configurations."""

from __future__ import annotations

import random

from amaranth.hdl import Fragment

from hwmodel.synthesis.costmodel import mac_widths
from lba_core import ConfigError, FloatFormat, MacConfig, derive_datapath
from rtl import ChunkAdder, FMAq, check_config
from rtl.blocks import Adder, Aligner, Multiplier, Normalizer, ProductRounder, RangeFlags, Rounder

CONFIGS = 200


def random_format(rng: random.Random, max_exp_bits: int, max_man_bits: int) -> FloatFormat:
    exp_bits = rng.randint(2, max_exp_bits)
    default_bias = (1 << (exp_bits - 1)) - 1
    return FloatFormat(exp_bits, rng.randint(0, max_man_bits), bias=default_bias + rng.randint(-2, 2),
                       subnormals=rng.random() < 0.4)


def random_configs(count: int, seed: int) -> list[MacConfig]:
    rng = random.Random(seed)
    configs: list[MacConfig] = []
    while len(configs) < count:
        cfg = MacConfig(
            input=random_format(rng, 6, 7),
            weight=random_format(rng, 6, 7) if rng.random() < 0.3 else None,
            acc=random_format(rng, 8, 23),
            product=random_format(rng, 7, 10) if rng.random() < 0.4 else None,
            rounding=rng.choice(["rne", "rtz"]),
            chunk_size=rng.choice([None, rng.randint(1, 64)]),
        )
        try:
            check_config(cfg)
        except ConfigError:
            continue
        configs.append(cfg)
    return configs


def elaborated_blocks(component) -> dict[str, object]:
    """{submodule name: block} of an elaborated circuit (one level: the blocks of FMAq or ChunkAdder)."""
    return {name: child.origins[0] for child, name, _ in Fragment.get(component, None).subfragments}


def test_rtl_widths_equal_the_derivation(comparisons):
    compared = 0
    for cfg in random_configs(CONFIGS, seed=13):
        plan = derive_datapath(cfg)
        blocks = elaborated_blocks(FMAq(cfg))
        multiplier, aligner, adder = blocks["multiplier"], blocks["aligner"], blocks["adder"]
        normalizer, rounder, range_flags = blocks["normalizer"], blocks["rounder"], blocks["range_flags"]
        assert isinstance(multiplier, Multiplier) and isinstance(aligner, Aligner) and isinstance(adder, Adder)
        assert isinstance(normalizer, Normalizer) and isinstance(rounder, Rounder)
        assert isinstance(range_flags, RangeFlags)
        widths = {
            "multiplier.sig": (len(multiplier.sig), plan.multiplier_sig_bits),
            "aligner.addend.sig": (len(aligner.addend.sig), plan.product_sig_bits),
            "aligner.x_sig": (len(aligner.x_sig), plan.window_bits),
            "aligner.y_sig": (len(aligner.y_sig), plan.window_bits),
            "adder.magnitude": (len(adder.magnitude), plan.sum_bits),
            "normalizer.sig": (len(normalizer.sig), plan.sum_bits),
            "rounder.in_sig": (len(rounder.in_sig), plan.sum_bits),
            "rounder.sig": (len(rounder.sig), plan.acc_sig_bits),
            "range_flags.sig": (len(range_flags.sig), plan.acc_sig_bits),
        }
        exponents = [multiplier.exp, aligner.x_exp, normalizer.exp, rounder.exp, range_flags.exp]
        if cfg.product is not None:
            product_rounder = blocks["product_rounder"]
            assert isinstance(product_rounder, ProductRounder)
            widths["product_rounder.exact.sig"] = (len(product_rounder.exact.sig), plan.multiplier_sig_bits)
            widths["product_rounder.sig"] = (len(product_rounder.sig), plan.product_sig_bits)
            exponents.append(product_rounder.exp)
        else:
            assert "product_rounder" not in blocks
        chunk = elaborated_blocks(ChunkAdder(cfg))
        widths["chunk aligner.x_sig"] = (len(chunk["aligner"].x_sig), plan.chunk_window_bits)
        widths["chunk adder.magnitude"] = (len(chunk["adder"].magnitude), plan.chunk_sum_bits)
        widths["cost model datapath_bits"] = (mac_widths(cfg)["datapath_bits"], len(adder.magnitude))
        widths["cost model mult_bits"] = (
            mac_widths(cfg)["mult_bits"], (cfg.a_format.man_bits + 1) * (cfg.b_format.man_bits + 1)
        )
        for exponent in exponents:
            assert exponent.shape().signed and len(exponent) == plan.exp_bits, cfg.name
        wrong = {name: pair for name, pair in widths.items() if pair[0] != pair[1]}
        assert not wrong, f"{cfg.name}: (RTL, derivation) {wrong}"
        compared += len(widths) + len(exponents)
    comparisons(f"RTL signal widths vs lba_core.derive_datapath ({CONFIGS} configurations)", compared)


def test_window_covers_the_exactness_bound():
    """docs/rtl.md: L = max(acc significand + 2, product significand + 1); the chunk adder's addend is an
    accumulator value."""
    assert derive_datapath(MacConfig(input="e4m3", acc="e4m7")).window_bits == 10
    assert derive_datapath(MacConfig(input="e4m3", acc="e4m3")).window_bits == 9
    assert derive_datapath(MacConfig(input="e4m3", acc="fp32")).window_bits == 26
    assert derive_datapath(MacConfig(input="e4m3", acc="e4m3", product="e5m2")).window_bits == 6
    assert derive_datapath(MacConfig(input="e4m3", acc="e4m7")).chunk_window_bits == 10


def test_product_ranges():
    plan = derive_datapath(MacConfig(input="e4m3", acc="e4m7"))
    assert plan.exact_product_exponent_range == (-12, 17)  # 2^-6 * 2^-6 .. 448^2 = 1.53 * 2^17
    assert plan.largest_product_exponent == 17
    assert plan.product_quantum_exponent == -18
    assert plan.product_bound_exponent == 18 and plan.sum_bound_exponent == 19
    subnormal = derive_datapath(MacConfig(input="e4m3_sub", acc="e4m7"))
    assert subnormal.exact_product_exponent_range == (-18, 17)
    # R_prod rounds the largest exact product 30 * 30 = 900 = 1.76 * 2^9 (e3m3: max 30) up to 2^10 in e5m0:
    # the bias rule must see that binade, not the exact product's.
    rounded = derive_datapath(MacConfig(input="e3m3", acc="e5m6", product="e5m0"))
    assert rounded.largest_product_exponent == 10
