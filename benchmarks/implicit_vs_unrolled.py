"""Hypergradient cost, implicit differentiation against unrolling, as inner iterations grow.

For 10 to 1000 inner iterations (the inner tolerance set out of reach, so the
solver runs them all), each in a fresh process so that its peak memory is its
own: the time of one compiled hypergradient (median of 5 calls), XLA's
working memory for it (``memory_analysis``), and the process's peak resident
memory beyond what it held before compiling (the MNIST arrays and JAX).
The implicit-differentiation chapter plots the same measurement (in float64,
in one process).

Usage: python benchmarks/implicit_vs_unrolled.py [--iterations 10 30 100 300 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, rss_bytes


def child(method: str, iterations: int) -> None:
    import jax.numpy as jnp

    from distill import data, distillation, profiling

    mnist = data.load_dataset("mnist")
    train_images = jnp.asarray(mnist.train.images)
    train_labels = jnp.asarray(mnist.train.labels)
    initial, labels = distillation.initial_distilled_set(distillation.PRESETS["fixed-l2reg"])
    images = initial + 0.3 * train_images[:10]  # away from the faint start, as in the chapter
    before = rss_bytes()
    cost = profiling.hypergradient_cost(images, labels, train_images, train_labels,
                                        iterations=iterations, method=method, repeats=5)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"method": method, "iterations": iterations,
                      "compile_seconds": cost.compile_seconds, "run_seconds": cost.run_seconds,
                      "temp_bytes": cost.temp_bytes, "rss_before": before, "rss_peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "ITERATIONS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return

    print(f"machine: {machine()}\n", flush=True)
    results = []
    print(f"{'inner iterations':>16} | {'method':>8} | {'time (s)':>8} | {'compile (s)':>11} | "
          f"{'XLA working memory (MB)':>23} | {'peak RSS growth (MB)':>20}")
    for iterations in args.iterations:
        for method in ("implicit", "unrolled"):
            completed = subprocess.run(
                [sys.executable, __file__, "--child", method, str(iterations)],
                capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise RuntimeError(completed.stderr[-3000:])
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            results.append(row)
            print(f"{iterations:>16} | {method:>8} | {row['run_seconds']:>8.3f} | "
                  f"{row['compile_seconds']:>11.2f} | {row['temp_bytes'] / 1e6:>23.1f} | "
                  f"{(row['rss_peak'] - row['rss_before']) / 1e6:>20.0f}", flush=True)

    def series(method, key):
        return [row[key] for row in results if row["method"] == method]

    for method in ("implicit", "unrolled"):
        memory = series(method, "temp_bytes")
        print(f"{method}: working memory {memory[0] / 1e6:.1f} MB at {args.iterations[0]} "
              f"iterations, {memory[-1] / 1e6:.1f} MB at {args.iterations[-1]} "
              f"({memory[-1] / memory[0]:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results},
                                              indent=2))


if __name__ == "__main__":
    main()
