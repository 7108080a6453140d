"""`make bench`: run every benchmark and print one BENCH line each."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "bench.bench_pseudonymize",
    "bench.bench_dp_aggregate",
    "bench.bench_he",
    "bench.bench_anonymize",
    "bench.bench_encrypt",
]


def main(argv: list[str]) -> int:
    selected = [b for b in BENCHMARKS if not argv or any(a in b for a in argv)]
    for name in selected:
        importlib.import_module(name).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
