"""Synthesis benchmark: the generic-target area sweep of the 7 default accumulators, cold and warm.

Cold = an empty result cache (every Verilog export and Yosys run happens); warm = the same sweep again,
everything read back from the cache. Targets (project issue #4): cold < 2 min, warm < 2 s on a 2-core machine.

    .venv/bin/python benchmarks/synth.py [--jobs N] [--no-blocks]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from hwmodel.synthesis.area import area_sweep, default_configs
from hwmodel.synthesis.mac_synth import generator_fingerprint
from hwmodel.execution.cache import ResultCache


def timed_sweep(cache: ResultCache, jobs: int, blocks: bool) -> tuple[float, int]:
    started = time.perf_counter()
    df = area_sweep(default_configs(), jobs=jobs, cache=cache, blocks=blocks)
    return time.perf_counter() - started, len(df)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs (default: all cores)")
    parser.add_argument("--no-blocks", action="store_true", help="skip the per-block hierarchical synthesis")
    args = parser.parse_args()
    fingerprint = generator_fingerprint()
    with tempfile.TemporaryDirectory(prefix="lba-synth-bench-") as folder:
        cache = ResultCache(folder)
        cold, rows = timed_sweep(cache, args.jobs, not args.no_blocks)
        warm, _ = timed_sweep(cache, args.jobs, not args.no_blocks)
    if generator_fingerprint() != fingerprint:
        print("warning: the RTL sources changed during the benchmark; the warm run re-exported them")
    print(f"generic area sweep, {rows} configurations, blocks={'off' if args.no_blocks else 'on'}, "
          f"{args.jobs} jobs, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"cold (empty cache): {cold:7.1f} s   target < 120 s")
    print(f"warm (cached):      {warm:7.2f} s   target < 2 s")


if __name__ == "__main__":
    main()
