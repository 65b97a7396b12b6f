"""The fused accumulator's configuration (docs/arithmetic.md §9): presets, spellings, validation, round-trips."""

from __future__ import annotations

import json
import tomllib

import pytest

from lba_core import FUSED_PRESETS, ConfigError, FloatFormat, FormatError, FusedAccumulator, MacConfig, parse_acc, parse_fused
from lba_core.fused import is_fused_spelling

PRESET_ROWS = {  # name: (L, F, output, rounding, inputs), as MMA-Sim 2.1.1 builds the units
    "hopper-fp8": (32, 13, "e8m13_sub", "rtz", ("e4m3", "e5m2")),
    "hopper-fp8-f16": (32, 13, "e5m10_sub", "rne", ("e4m3", "e5m2")),
    "hopper-fp16": (16, 25, "e8m23_sub", "rtz", ("e5m10",)),
    "hopper-bf16": (16, 25, "e8m23_sub", "rtz", ("e8m7",)),
    "blackwell-fp8": (32, 25, "e8m23_sub", "rtz", ("e4m3", "e5m2")),
}


def test_presets_have_the_documented_parameters():
    assert set(FUSED_PRESETS) == set(PRESET_ROWS)
    for name, (group, frac, output, rounding, inputs) in PRESET_ROWS.items():
        acc = FUSED_PRESETS[name]
        assert (acc.group, acc.fraction_bits, acc.output.name, acc.output_rounding, acc.inputs) == (
            group, frac, output, rounding, inputs)
        assert acc.ieee_output and acc.promote_every is None and acc.name == name
        assert acc.e_zero == (-21 if output == "e5m10_sub" else -133)


@pytest.mark.parametrize("spelling", [
    "hopper-fp8", "HOPPER-FP8", " hopper-fp8+promote128 ", "blackwell-fp8+promote32", "fdpa32f13-e8m13_sub-rtz",
    "fdpa16f25-e5m10_sub-rne+promote64", "fdpa8f6-e4m7-rne-sat", "fdpa4f0-e5m10_sub-rne-z-30",
])
def test_spellings_round_trip(spelling):
    acc = parse_fused(spelling)
    assert acc.name == spelling.strip().lower()
    assert parse_fused(acc.name) == acc and parse_fused(acc) is acc
    assert is_fused_spelling(spelling) and not is_fused_spelling("e4m7")


def test_promotion_suffix_and_field():
    acc = parse_fused("hopper-fp8+promote128")
    assert acc.promote_every == 128 and acc.group == 32
    assert FusedAccumulator(32, 13, "e8m13_sub", promote_every=128, name="hopper-fp8", inputs=("e4m3", "e5m2")) == acc
    # the name follows the field when the field changes
    from dataclasses import replace
    assert replace(acc, promote_every=64).name == "hopper-fp8+promote64"
    assert replace(acc, promote_every=None).name == "hopper-fp8"


def test_parse_acc_is_the_one_accumulator_parse():
    assert parse_acc("hopper-fp8") == FUSED_PRESETS["hopper-fp8"] and parse_acc("e4m7") == FloatFormat(4, 7)
    assert parse_acc("int32").name == "int32"
    with pytest.raises(FormatError, match="FusedAccumulator.promote_every"):
        parse_acc("hopper-fp8+promote7")
    with pytest.raises(FormatError, match="malformed float format 'e4q7'.*fused accumulator \\(hopper-fp8"):
        parse_acc("e4q7")


def test_general_fields():
    acc = FusedAccumulator(group=32, fraction_bits=13, output=FloatFormat(8, 13, subnormals=True))
    assert acc.name == "fdpa32f13-e8m13_sub-rtz" and acc.inputs is None and acc.e_zero == -133
    cfg = MacConfig(input="e4m3", weight="e5m2", acc=acc)
    assert cfg.fused_acc and cfg.acc is acc and cfg.name == "e4m3xe5m2-fdpa32f13-e8m13_sub-rtz"
    assert MacConfig(input="e3m4", acc=acc).fused_acc  # a general unit takes any float operand


@pytest.mark.parametrize("fields,match", [
    (dict(group=0), "FusedAccumulator.group must be >= 1"),
    (dict(group=2.0), "FusedAccumulator.group must be an integer"),
    (dict(fraction_bits=-1), "FusedAccumulator.fraction_bits must be >= 0"),
    (dict(output="int32"), "FusedAccumulator.output must be a floating-point format"),
    (dict(output="e8m13"), "FusedAccumulator.output=e8m13 with ieee_output=True must have subnormals"),
    (dict(output="x9"), "FusedAccumulator.output: malformed"),
    (dict(output_rounding="rnd"), "FusedAccumulator.output_rounding must be one of rtz, rne"),
    (dict(ieee_output=1), "FusedAccumulator.ieee_output must be True or False"),
    (dict(promote_every=48), "FusedAccumulator.promote_every must be None or a positive multiple of group=32"),
    (dict(promote_every=0), "FusedAccumulator.promote_every"),
    (dict(e_zero=1.5), "FusedAccumulator.e_zero must be an integer"),
    (dict(inputs="e4m3"), "FusedAccumulator.inputs must be None or a tuple"),
    (dict(inputs=("e4m3", "q")), "FusedAccumulator.inputs: malformed"),
    (dict(name="hopper-fp8", fraction_bits=12), "FusedAccumulator.name='hopper-fp8' is a preset name"),
    (dict(name="fdpa32f12-e8m13_sub-rtz"), "is neither a preset .* nor the spelling of its fields"),
    (dict(name="e4m7"), "FusedAccumulator.name='e4m7' is neither a preset"),
])
def test_bad_fields_name_the_field(fields, match):
    base = dict(group=32, fraction_bits=13, output="e8m13_sub")
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace("+", r"\+")):
        FusedAccumulator(**{**base, **fields})


@pytest.mark.parametrize("fields,match", [
    (dict(acc="hopper-fp8", product="e5m10"), "MacConfig.product must be None with the fused accumulator hopper-fp8"),
    (dict(acc="hopper-fp8", chunk_size=64), "MacConfig.chunk_size must be None with the fused accumulator"),
    (dict(acc="hopper-fp8", rounding="rtz"), "MacConfig.rounding must stay 'rne'"),
    (dict(acc="hopper-fp8", underflow=False), "MacConfig.underflow must be True"),
    (dict(acc="hopper-fp8", input="int8"), "MacConfig.input=int8 is fixed point"),
    (dict(acc="hopper-fp8", input="e3m4"), "MacConfig.input=e3m4 is not an input of the fused accumulator hopper-fp8"),
    (dict(acc="hopper-fp8", weight="e4m3_b10"), "MacConfig.weight=e4m3_b10 is not an input"),
    (dict(acc="hopper-bf16", input="fp16"), "MacConfig.input=e5m10 is not an input of the fused accumulator hopper-bf16"),
    (dict(acc="hopper-fp8+promote100"), "MacConfig.acc: FusedAccumulator.promote_every must be None or a positive"),
    (dict(acc="fdpa32f13-e8m13-rtz"), "MacConfig.acc: FusedAccumulator.output=e8m13 with ieee_output=True must have"),
    (dict(acc="fdpa32-e8m13_sub-rtz"), "MacConfig.acc: unknown fused accumulator 'fdpa32-e8m13_sub-rtz'"),
    (dict(acc="hopper-fp7"), "MacConfig.acc: malformed float format 'hopper-fp7'.*fused accumulator \\(hopper-fp8, "),
])
def test_mac_config_combinations_that_make_no_sense(fields, match):
    with pytest.raises(ConfigError, match=match):
        MacConfig(**{"input": "e4m3", **fields})


def test_mac_config_takes_presets_and_mixed_inputs():
    cfg = MacConfig(input="e4m3", acc="hopper-fp8")
    assert cfg.fused_acc and not cfg.fixed_acc and cfg.acc == FUSED_PRESETS["hopper-fp8"]
    assert cfg.name == "e4m3xe4m3-hopper-fp8"
    mixed = MacConfig(input="e4m3_sub", weight="e5m2", acc="hopper-fp8+promote128")
    assert mixed.name == "e4m3_subxe5m2-hopper-fp8+promote128"
    assert not MacConfig(input="e4m3", acc="e4m7").fused_acc


@pytest.mark.parametrize("acc", ["hopper-fp8", "hopper-fp8+promote128", "hopper-bf16", "fdpa8f6-e4m7-rne-sat-z-3"])
def test_mac_config_serialisation_round_trips(acc):
    weight = "bf16" if "bf16" in acc else "e5m2"
    cfg = MacConfig(input="bf16" if "bf16" in acc else "e4m3", weight=weight, acc=acc)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert MacConfig.from_dict(data) == cfg
    assert MacConfig(**tomllib.loads(f'input = "{cfg.input.name}"\nweight = "{weight}"\nacc = "{cfg.acc.name}"\n')) == cfg
    assert FusedAccumulator.from_dict(cfg.acc.to_dict()) == cfg.acc
    assert str(cfg.acc) == cfg.acc.name
