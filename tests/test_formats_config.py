"""FloatFormat parsing, limits and errors; MacConfig validation and serialization."""

from __future__ import annotations

from fractions import Fraction

import pytest

from lba_core import ConfigError, FloatFormat, FormatError, MacConfig, paper_acc_bias


@pytest.mark.parametrize(
    "text,expected",
    [
        ("e4m3", (4, 3)),
        ("E4M3", (4, 3)),
        ("M3E4", (4, 3)),
        ("m3e4", (4, 3)),
        (" e5m10 ", (5, 10)),
        ("fp32", (8, 23)),
        ("FP16", (5, 10)),
        ("bf16", (8, 7)),
        ("e2m0", (2, 0)),
    ],
)
def test_parse_spellings(text, expected):
    fmt = FloatFormat.parse(text)
    assert (fmt.exp_bits, fmt.man_bits) == expected
    assert fmt.bias == 2 ** (expected[0] - 1) - 1
    assert not fmt.subnormals


def test_canonical_name_round_trips():
    for fmt in [FloatFormat(4, 3), FloatFormat(4, 7, bias=10), FloatFormat(5, 2, subnormals=True), FloatFormat(3, 4, -2, True)]:
        assert FloatFormat.parse(fmt.name) == fmt


def test_ranges_of_known_formats():
    e4m3 = FloatFormat.parse("e4m3")
    assert (e4m3.max_value, e4m3.min_normal, e4m3.width) == (480, Fraction(1, 64), 8)
    assert FloatFormat.parse("fp16").max_value == 131008
    assert FloatFormat.parse("e4m3_sub").min_positive == Fraction(1, 512)
    assert FloatFormat.parse("fp32").max_value == (2 - Fraction(1, 2**23)) * 2**128  # no Inf code: one more binade
    assert len(e4m3.values()) == 241  # 2 * 15 * 8 normals + one zero


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("e4", "malformed"),
        ("e4m3x", "malformed"),
        ("fp64", "malformed"),
        ("", "malformed"),
        ("e1m3", "exp_bits must be >= 2"),
        ("e0m3", "exp_bits must be >= 2"),
        ("e4m53", "man_bits=53"),
        ("e12m3", "exceeds"),
        ("e11m52_b1030_sub", "below"),
    ],
)
def test_bad_formats_are_named(text, fragment):
    with pytest.raises(FormatError, match=fragment):
        FloatFormat.parse(text)


def test_bad_format_parameters():
    with pytest.raises(FormatError, match="man_bits must be >= 0"):
        FloatFormat(4, -1)
    with pytest.raises(FormatError, match="exp_bits must be an integer"):
        FloatFormat(4.0, 3)
    with pytest.raises(FormatError, match="not a 8-bit code"):
        FloatFormat(4, 3).decode(256)
    with pytest.raises(FormatError, match="not representable"):
        FloatFormat(4, 3).encode(1.0625)
    with pytest.raises(FormatError, match="outside the range"):
        FloatFormat(4, 3).encode(1000)


def test_mac_config_accepts_strings_and_serializes():
    cfg = MacConfig("e4m3", "M7E4", product="e5m6", rounding="RTZ", chunk_size=16, weight="e5m2")
    assert cfg.acc == FloatFormat(4, 7) and cfg.rounding == "rtz"
    assert cfg.a_format == FloatFormat(4, 3) and cfg.b_format == FloatFormat(5, 2)
    assert MacConfig.from_dict(cfg.to_dict()) == cfg
    assert MacConfig("e4m3", "e4m7").b_format == FloatFormat(4, 3)
    assert cfg.replace(underflow=False).name.endswith("nouf")


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(rounding="rna"), "rounding must be one of rne, rtz"),
        (dict(chunk_size=0), "chunk_size must be a positive integer"),
        (dict(chunk_size=2.5), "chunk_size must be a positive integer"),
        (dict(underflow="yes"), "underflow must be True or False"),
        (dict(product="e4"), "MacConfig.product: malformed"),
    ],
)
def test_bad_mac_configs(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        MacConfig("e4m3", "e4m7", **kwargs)
    with pytest.raises(ConfigError, match="MacConfig.acc"):
        MacConfig("e4m3", "e1m7")


def test_paper_bias_rule():
    assert paper_acc_bias(14, None) == 14
    assert paper_acc_bias(14, 16) == 12  # half a binade per doubling of the chunk
    assert paper_acc_bias(14, 256) == 10
