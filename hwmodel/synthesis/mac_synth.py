"""Verilog export and synthesis of MAC configurations: the ``fmaq`` and ``mac`` tops of each, cached by content.

:func:`synthesize_configs` gives the full per-configuration report (the ``hwmodel synth --json`` object).
The export's cache key covers the circuit's sources only (rtl and lba_core, :func:`generator_fingerprint`), so
editing tests, the simulator or the reports leaves every cached export and synthesis warm.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lba_core
import rtl
from lba_core import MacConfig

from ..execution.cache import ResultCache, content_key
from ..execution.jobs import Executor, run_cached
from .synth import Design, check_targets, synthesize_designs, yosys_version

TOPS = ("fmaq", "mac")


def default_workers() -> int:
    return os.cpu_count() or 1


def generator_sources() -> dict[str, Path]:
    """The source files that shape the exported Verilog, by package-relative name: the generator's (rtl) and
    lba_core's, nothing else (the cosimulation harness lives in tests/support, outside the key)."""
    sources = {}
    for package in (rtl, lba_core):
        root = Path(package.__file__).parent
        sources.update({str(path.relative_to(root.parent)): path for path in sorted(root.rglob("*.py"))})
    return sources


def generator_fingerprint() -> str:
    """Hash of everything that shapes the exported Verilog: :func:`generator_sources` and the Amaranth and
    Yosys versions. Part of each export's cache key, so editing the RTL invalidates it."""
    digest = hashlib.sha256()
    for name, path in generator_sources().items():
        digest.update(name.encode())
        digest.update(path.read_bytes())
    digest.update(f"amaranth {metadata.version('amaranth')} {yosys_version()}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportJob:
    """Export one configuration's Verilog (both tops), flattened or hierarchical."""

    config_json: str
    hierarchical: bool
    fingerprint: str
    pipeline: int = 0

    @property
    def key(self) -> str:
        parts = ("rtl.export_verilog", self.config_json, str(self.hierarchical), self.fingerprint)
        return content_key(*parts, f"pipeline {self.pipeline}") if self.pipeline else content_key(*parts)

    def run(self) -> dict[str, Any]:
        """``{top: Verilog text}``, and with ``hierarchical`` ``"blocks"``: {top: {module: block}}."""
        cfg = MacConfig.from_dict(json.loads(self.config_json))
        with tempfile.TemporaryDirectory(prefix="lba-export-") as folder:
            paths = rtl.export_verilog(cfg, folder, hierarchical=self.hierarchical, pipeline=self.pipeline)
            result: dict[str, Any] = {top: paths[top].read_text() for top in TOPS}
            if self.hierarchical:
                result["blocks"] = json.loads(paths["config"].read_text())["blocks"]
            return result


def export_designs(
    configs: Sequence[MacConfig],
    *,
    block_tops: Sequence[str],
    cache: ResultCache,
    workers: int,
    progress: bool,
    pipeline: int = 0,
    executor: Executor | None = None,
) -> list[dict[str, Design]]:
    """The ``fmaq`` and ``mac`` designs of each configuration, with hierarchical Verilog for ``block_tops``."""
    blocks = bool(block_tops)
    fingerprint = generator_fingerprint()
    jobs = []
    for cfg in configs:
        config_json = json.dumps(cfg.to_dict(), sort_keys=True)
        jobs.append(ExportJob(config_json, False, fingerprint, pipeline))
        if blocks:
            jobs.append(ExportJob(config_json, True, fingerprint, pipeline))
    texts = iter(run_cached(jobs, cache, workers, progress, desc="verilog", executor=executor))
    designs = []
    for _ in configs:
        flat = next(texts)
        hierarchical = next(texts) if blocks else {}
        designs.append({
            top: Design(top, flat[top], hierarchical[top], hierarchical["blocks"][top]) if top in block_tops
            else Design(top, flat[top])
            for top in TOPS
        })
    return designs


# --------------------------------------------------------------------------------------------- synthesis
def check_configs(configs: Iterable[MacConfig]) -> list[MacConfig]:
    """Every configuration must be buildable: raises ConfigError naming the first that is not."""
    configs = list(configs)
    if not configs:
        raise ValueError("no configurations to synthesize")
    for cfg in configs:
        rtl.check_fixed_config(cfg) if cfg.fixed_acc else rtl.check_config(cfg)
    return configs


def synthesize_configs(
    configs: Iterable[MacConfig],
    targets: Iterable[str] = ("generic",),
    *,
    blocks: bool = True,
    cache: ResultCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    timeout_s: float | None = None,
    block_tops: Sequence[str] = TOPS,
    pipeline: int = 0,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """``{"fmaq": report, "mac": report, "config": {...}}`` per configuration (see hwmodel.synthesis.synth for a report).

    ``blocks`` adds the per-block breakdown of the tops in ``block_tops`` (one more Yosys run each);
    ``pipeline`` N > 0 synthesizes the MAC with N product registers (rtl.PipelinedMAC); ``executor`` runs the
    exports and Yosys runs that are not cached (hwmodel.execution.jobs.Executor, default local workers)."""
    configs = check_configs(configs)
    targets = check_targets(targets)
    cache = cache if cache is not None else ResultCache(None)
    workers = workers or default_workers()
    block_tops = tuple(block_tops) if blocks else ()
    designs = export_designs(configs, block_tops=block_tops, cache=cache, workers=workers, progress=progress,
                             pipeline=pipeline, executor=executor)
    flat = [per_config[top] for per_config in designs for top in TOPS]
    reports = iter(
        synthesize_designs(flat, targets, blocks=blocks, cache=cache, workers=workers, progress=progress,
                           timeout_s=timeout_s, executor=executor)
    )
    results = []
    for cfg in configs:
        result: dict[str, Any] = {top: next(reports) for top in TOPS}
        result["config"] = {**cfg.to_dict(), "name": cfg.name, "pipeline": pipeline}
        results.append(result)
    return results
