"""What a sweep covers: the grid of MAC configurations and how each is measured, declared once.

Every setting is one dataclass field declared with :func:`hwmodel.workloads.settings.setting` (option, metavar,
help, validator); the ``hwmodel sweep`` options with their defaults, the TOML keys and the validation of both are
generated from these fields (hwmodel.sweep.loading). A workload with settings of its own declares them in its
module (its ``settings_table``) and they become ``spec.<workload name>``, its ``[table]`` and its options here,
without a line in this file. The accuracy defaults are lba_train's (TrainOptions, FinetuneOptions,
LayerOptions): one place decides them for ``hwmodel sweep``, ``hwmodel train`` and the library.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lba_core import ROUNDING_MODES, ConfigError, FloatFormat, MacConfig
from lba_train.finetuning import FinetuneOptions
from lba_train.layers import LayerOptions
from lba_train.train import TrainOptions

from ..synthesis.flows.targets import known_targets
from ..workloads import registry
from ..workloads.lm import LMSpec
from ..workloads.minilm import MiniLMSpec
from ..workloads.settings import choice, count, default_of, flag, pair, positive_number, setting
from . import loading, validators
from .loading import apply_options
from .validators import array_shape, fixed_point_config

__all__ = ["AREA_ONLY_NAME", "DEFAULT_ACCUMULATORS", "DEFAULT_FIXED_POINT", "DEVICES", "MAIN_JOB", "MODELS",
           "STANDARD_ACCUMULATORS", "TARGETS", "AccuracySpec", "LMSpec", "MiniLMSpec", "SweepSpec", "apply_options",
           "check_buildable", "check_option", "fixed_point_config", "load_sweep_spec"]

#: Yosys flows (generic, FPGA resource counts) and silicon targets (standard cells; ice40/ecp5 also place
#: and route).
TARGETS = known_targets()
MODELS = registry.MODELS
DEFAULT_ACCUMULATORS = ("fp32", "fp16", "bf16", "e5m6", "e4m7", "e3m8", "e4m3", "e5m2", "hopper-fp8", "hopper-fp8+promote128")
#: Integer and fixed-point rows beside the floating-point grid (docs/arithmetic.md §8), as "INPUT:ACC": INT8 x INT8
#: into 32 bits (exact) and into 16 bits saturating, and e4m3 products into an exact Kulisch-style register
#: (F = 18 holds every e4m3 product; 30 integer bits hold 2^11 of the largest) and a narrower rounding one.
DEFAULT_FIXED_POINT = ("int8:int32", "int8:int16_sat", "e4m3:fx48.18", "e4m3:fx32.10_sat")
#: The IEEE-style accumulators keep their standard bias in a sweep unless ``standard_bias`` says otherwise.
STANDARD_ACCUMULATORS = tuple(FloatFormat.parse(name) for name in ("fp32", "fp16", "bf16"))
DEVICES = ("cpu", "cuda")
#: Report folder of an area-only sweep without --name, so that it never replaces the main report.
AREA_ONLY_NAME = "area"
GRID = "grid (without --config)"


@dataclass(frozen=True)
class AccuracySpec:
    """The accuracy half (the ``[accuracy]`` table): which model, data and training budget each accumulator
    configuration gets. Its defaults are lba_train's: the spec keeps the flat fields (their names are the TOML
    keys and the ``settings`` of every committed report folder) rather than holding the option objects."""

    options_group: ClassVar[str] = "accuracy"

    enabled: bool = setting(True, option="--accuracy", kind="flag", check=flag, help="run the accuracy pipeline",
                            default_text="on, off with --acc")
    model: str = setting("resnet", option="--model", check=choice(lambda: MODELS), help=", ".join(MODELS))
    data: str = setting("digits", option="--data", metavar="SPEC", check=validators.data, relative=True,
                        digits_only=True, help="digits, imagefolder:PATH or mnist:PATH")
    epochs_baseline: int = setting(default_of(TrainOptions, "epochs"), option="--epochs-baseline", kind="int",
                                   metavar="N", check=count(0), digits_only=True, help="epochs of the float baseline")
    epochs: tuple[int, int] = setting(default_of(FinetuneOptions, "epochs"), option="--epochs", kind="ints",
                                      metavar="E1[,E2]", check=pair(count(0)), digits_only=True,
                                      help="fine-tuning epochs of stage 1 and 2")
    lr: tuple[float, float] = setting(default_of(FinetuneOptions, "lr"), option="--lr", kind="floats",
                                      metavar="LR[,LR2]", check=pair(positive_number), digits_only=True,
                                      help="Adam learning rate of the fine-tuning stages")
    lr_baseline: float = setting(default_of(TrainOptions, "lr"), option="--lr-baseline", kind="float", metavar="LR",
                                 check=positive_number, digits_only=True, help="Adam learning rate of the baseline")
    seed: int = setting(default_of(TrainOptions, "seed"), option="--seed", kind="int", metavar="N", check=count(0),
                        help="seed of the split, the initialisation and the shuffles")
    #: Fine-tuning seeds per configuration: seed, seed + 1, ... (the split, baseline and bias use ``seed``).
    # measured: the default sweep with 3 seeds is 213 s of CPU on 2 cores (issue #12 item 7)
    seeds: int = setting(3, option="--seeds", kind="int", metavar="N", check=count(1), digits_only=True,
                         help="fine-tuning seeds per configuration, --seed, --seed+1, ...; accuracies are their mean, "
                         "the report shows the spread")
    bias: str = setting(default_of(FinetuneOptions, "bias"), option="--bias", check=choice(validators.bias_modes),
                        digits_only=True, help="accumulator bias of non-standard formats: calibrate (on observed "
                        "partial sums), paper (the paper's rule) or format (the format's own); docs/training.md")
    #: Fixed-bias accumulators (fp32/fp16/bf16, explicit biases): "margin" (per-layer power-of-two operand
    #: margins, lba_train.bias) or "format" (plain max-abs scaling: the labelled ablation).
    standard_bias: str = setting("margin", option="--standard-bias", check=choice(validators.bias_modes),
                                 help="bias of fp32/fp16/bf16 and explicit-bias accumulators: margin (per-layer "
                                 "power-of-two operand margins) or format (plain max-abs scaling, the ablation)")
    estimator: str = setting(default_of(LayerOptions, "estimator"), option="--estimator",
                             check=choice(validators.estimators), digits_only=True,
                             help="gradient estimator through the accumulator; docs/estimators.md")
    #: Width multiplier of the model's hidden layers (lba_train.models.build_model): makes K, the products
    #: each dot product sums, ``width`` times longer, at about ``width``² the MACs (docs/sweep.md §7).
    width: int = setting(1, option="--width", kind="int", metavar="N", check=validators.width, digits_only=True,
                         help="widen the model's hidden layers N times: N times longer dot products (K), about N^2 "
                         "the MACs; docs/sweep.md")
    #: Where each baseline and accuracy point trains: "cpu", or "cuda" (one GPU per point, which a Ray task
    #: declares as ``num_gpus=1``); part of the points' identity (float training differs between devices).
    device: str = setting(default_of(TrainOptions, "device"), option="--device", check=choice(lambda: DEVICES),
                          digits_only=True, help="where the points train: cpu, or cuda: one GPU per point, which "
                          "a Ray task declares")


def _with_workload_tables(cls):
    """One field per workload of the registry that declares settings: ``spec.<name>`` of its settings_table."""
    for workload in registry.WORKLOADS:
        if workload.settings_table is not None:
            cls.__annotations__[workload.name] = workload.settings_table
            setattr(cls, workload.name, field(default_factory=workload.settings_table))
    return cls


@dataclass(frozen=True)
@_with_workload_tables
class SweepSpec:
    """A grid of MAC configurations (inputs x accumulators x rounding x chunk sizes) and how to measure them;
    ``accuracy`` and one table per workload with settings (``minilm``, ``lm``) hold the rest."""

    options_group: ClassVar[str | None] = None

    name: str = setting("default", option="--name", check=validators.report_name, run_option=True,
                        help="report folder under --reports",
                        default_text=f"the file's name; 'default'; '{AREA_ONLY_NAME}' for an area-only sweep")
    inputs: tuple[str, ...] = setting(("e4m3",), option="--in", dest="inputs", kind="list", metavar="LIST", group=GRID,
                                      check=validators.formats, help="input format(s)")
    accumulators: tuple[str, ...] = setting(DEFAULT_ACCUMULATORS, option="--acc", dest="acc", kind="list",
                                            metavar="LIST", group=GRID, check=validators.accumulators,
                                            help="accumulator formats or fused accumulators (hopper-fp8); with --acc "
                                            "the sweep is area only unless --accuracy")
    rounding: tuple[str, ...] = setting(("rne",), option="--rounding", kind="list", metavar="LIST", group=GRID,
                                        check=validators.entries(lambda: ROUNDING_MODES),
                                        help=f"rounding mode(s): {', '.join(ROUNDING_MODES)}")
    chunk_sizes: tuple[int, ...] = setting((0,), option="--chunk", kind="ints", metavar="LIST", group=GRID,
                                           check=validators.chunk_sizes, help="chunk size(s); 0 = one chunk")
    product: str | None = setting(None, option="--product", metavar="FMT", group=GRID, check=validators.one_format,
                                  help="product format", default_text="exact product")
    #: The option is hwmodel synth's (hwmodel.cli.synth.synthesis_options), shared by every command that synthesizes.
    targets: tuple[str, ...] = setting(("generic", "sky130"), option="--target", group="external",
                                       check=validators.entries(lambda: TARGETS), help="synthesis targets")
    #: Energy per MAC (gate-level activity on the digits ResNet's operands) for the ASIC targets.
    energy: bool = setting(False, option="--energy", kind="switch", check=flag,
                           help="also energy per MAC (gate-level switching on the digits ResNet's operands and on "
                           "random ones) for the standard-cell targets", default_text="off")
    jobs: int = setting(2, option="--jobs", group="external", check=count(1), run_option=True, help="parallel runs")
    #: Where the accuracy and synthesis points run: "local" worker processes or "ray" tasks (hwmodel.execution.jobs.Executor);
    #: results are the same bits either way, so neither is part of a point's identity.
    executor: str = setting("local", option="--executor", group="execution", check=validators.executor,
                            run_option=True, help="where the accuracy and synthesis points run: local worker "
                            "processes or ray tasks (one CPU each; needs pip install -e '.[cluster]'); same results "
                            "either way")
    ray_address: str | None = setting(None, option="--ray-address", metavar="ADDR", group="execution",
                                      check=validators.ray_address, run_option=True,
                                      help="with --executor ray: a running cluster's address",
                                      default_text="start one on this machine")
    baseline_acc: str = setting("fp32", option="--baseline", metavar="FMT", group=GRID, check=validators.one_format,
                                help="accumulator the reduction is measured against")
    accuracy: AccuracySpec = field(default_factory=AccuracySpec)
    #: ``"RxC"``: also cost each configuration as an R x C PE array (docs/pe_array.md); chunk size = R.
    array: str | None = setting(None, option="--array", metavar="RxC", group=GRID, check=validators.array,
                                help="also cost each configuration as an R x C PE array, chunk size R "
                                "(docs/pe_array.md)", default_text="")
    #: "INPUT:ACC" integer/fixed-point configurations added after the grid (rne, one chunk); an array sweep
    #: leaves them out (the PE array is built from floating-point FMAq PEs).
    fixed_point: tuple[str, ...] = setting(DEFAULT_FIXED_POINT, option="--fixed", metavar="LIST", group=GRID,
                                           check=validators.fixed_pairs, help="integer/fixed-point INPUT:ACC rows; "
                                           "'none' for none", default_text=f"{','.join(DEFAULT_FIXED_POINT)} with "
                                           "the default grid, none with --acc")

    def array_shape(self) -> tuple[int, int] | None:
        return None if self.array is None else array_shape(self.array)

    def configs(self) -> list[MacConfig]:
        """Every point of the grid, in a stable order (inputs, then accumulators as listed); with an array,
        the chunk size is its rows (the array's chunked accumulation)."""
        shape = self.array_shape()
        if shape and set(self.chunk_sizes) - {0, shape[0]}:
            raise ConfigError(f"a {self.array} array accumulates chunks of {shape[0]} products; chunk sizes "
                              f"{', '.join(map(str, self.chunk_sizes))} do not fit it (leave them out)")
        chunks = (shape[0],) if shape else self.chunk_sizes
        grid = [
            MacConfig(inp, acc, product=self.product, rounding=rounding, chunk_size=chunk or None)
            for inp, acc, rounding, chunk in itertools.product(self.inputs, self.accumulators, self.rounding, chunks)
        ]
        return grid if shape else grid + [fixed_point_config(pair) for pair in self.fixed_point]

    def bias_mode(self, cfg: MacConfig) -> str:
        """How the accumulator bias of ``cfg`` is chosen: fp32/fp16/bf16 keep their standard bias (unless
        ``standard_bias`` says otherwise), a format written with an explicit ``_b<N>`` keeps that bias, every
        other format gets the sweep's ``bias`` mode."""
        if cfg.acc in STANDARD_ACCUMULATORS:
            return self.accuracy.standard_bias
        if not isinstance(cfg.acc, FloatFormat):
            return "format"  # fixed-point accumulators have no bias
        if cfg.acc.bias != cfg.acc.default_bias:  # the explicit bias is kept; "margin" scales the operands
            return "margin" if self.accuracy.standard_bias == "margin" else "format"
        return self.accuracy.bias

    @property
    def area_only(self) -> bool:
        return not self.accuracy.enabled


#: The embedded default sweep (``hwmodel sweep`` without a file or --acc): digits, MiniLM and the LM zero-shot.
MAIN_JOB = SweepSpec(minilm=MiniLMSpec(enabled=True), lm=LMSpec(enabled=True))


def load_sweep_spec(path: "str | Path", name: str | None = None) -> SweepSpec:
    """Read a sweep TOML file; every key is checked here, naming the file and the key."""
    return loading.load_spec(SweepSpec, path, name)


def check_option(option: str, value: Any, base: Path | None = None) -> Any:
    """Check one command-line value with the validator of the sweep setting of that option name, so that
    every command spells and means an option the same way (``hwmodel train --lr`` is ``hwmodel sweep --lr``);
    ConfigError ``"--lr: ..."``. Relative data paths are taken relative to ``base`` (default: the cwd)."""
    return loading.check_option(SweepSpec, option, value, base)


def check_buildable(spec: SweepSpec) -> list[MacConfig]:
    """The grid's configurations, each (and its baseline twin) checked against the RTL generator, so that a
    format no circuit implements fails before hours of training."""
    import rtl

    configs = spec.configs()
    if not configs:
        raise ConfigError("the sweep has no configurations")
    baseline = FloatFormat.parse(spec.baseline_acc)
    for cfg in configs:
        # integer/fixed-point rows have no floating-point twin (their reduction is left empty)
        for candidate in (cfg,) if cfg.fixed_acc else (cfg, cfg.replace(acc=baseline)):
            try:
                if candidate.fused_acc:  # the FDPA unit's generator (rtl.fdpa_plan), not the MAC's
                    from rtl.fdpa_plan import plan_fused

                    plan_fused(candidate)
                    continue
                rtl.check_config(candidate)
            except ConfigError as error:
                raise ConfigError(f"configuration {candidate.name} cannot be synthesized: {error}") from None
    return configs
