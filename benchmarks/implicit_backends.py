"""JAXopt against core JAX: the command line with ``--implicit-diff jaxopt`` and ``jax``.

For each preset (``fixed-l2reg``: inner gradient descent, λ fixed; the
default ``learned-l2reg``: inner L-BFGS, λ learned), the two backends run as
whole processes in turn, ``--repeats`` times each (the compiled-program cache
off, so every run compiles), and the script prints per run the distilling
time the command line reports, the outer steps, the outer loss, the inner
solves stopped at ``maxiter`` and the test accuracy; then the median time of
each and the ratio core JAX / JAXopt, measured in this one run.

Usage: python benchmarks/implicit_backends.py [--repeats 3] [--presets fixed-l2reg learned-l2reg]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

PATTERNS = {
    "seconds": r"outer steps, ([\d.]+) s",
    "steps": r"distilled \d+ images in (\d+) outer steps",
    "loss": r"outer loss [\d.]+ -> ([\d.]+)",
    "not converged": r"stopped at maxiter: (\d+) of",
    "accuracy (%)": r"trained on them: ([\d.]+)%",
}


def run(preset: str, backend: str, out: Path) -> dict:
    command = [sys.executable, "-m", "distill", "--preset", preset, "--implicit-diff", backend,
               "--out", str(out), "--overwrite", "--no-progress", "--no-compile-cache"]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return {name: float(re.search(pattern, completed.stdout).group(1))
            for name, pattern in PATTERNS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["fixed-l2reg", "learned-l2reg"])
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets:
            times = {"jaxopt": [], "jax": []}
            for repeat in range(args.repeats):
                for backend in times:  # in turn, so that both see the same load
                    figures = run(preset, backend, Path(folder) / f"{backend}.npz")
                    times[backend].append(figures["seconds"])
                    print(f"{preset:>13} | --implicit-diff {backend:<6} | run {repeat + 1} | "
                          + " | ".join(f"{name} {value:g}" for name, value in figures.items()),
                          flush=True)
            medians = {backend: statistics.median(values) for backend, values in times.items()}
            print(f"{preset:>13} | median distilling time: JAXopt {medians['jaxopt']:.2f} s, "
                  f"core JAX {medians['jax']:.2f} s; core JAX / JAXopt = "
                  f"{medians['jax'] / medians['jaxopt']:.2f}", flush=True)


if __name__ == "__main__":
    main()
