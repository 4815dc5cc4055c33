"""Measuring a compiled JAX function: compilation time, run time, working memory."""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax


@dataclasses.dataclass(frozen=True)
class CompiledCost:
    compile_seconds: float   # tracing, lowering and XLA compilation
    run_seconds: float       # median wall time of one call, after a warm-up call
    temp_bytes: int          # working memory XLA allocates for one call (arguments
                             # and outputs excluded), from its memory analysis
    output: object           # what the function returned


def measure_compiled(fun, *args, repeats: int = 5) -> CompiledCost:
    """Compile ``jax.jit(fun)`` for ``args``, then time ``repeats`` calls.

    ``temp_bytes`` is XLA's own account of the buffers the compiled program
    needs while it runs (``compiled.memory_analysis().temp_size_in_bytes``):
    the peak memory of the computation beyond its inputs and outputs,
    deterministic, and the same on a busy machine as on an idle one.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    start = time.perf_counter()
    compiled = jax.jit(fun).lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    output = jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis")
    return CompiledCost(compile_seconds, statistics.median(times),
                        int(analysis.temp_size_in_bytes), output)
