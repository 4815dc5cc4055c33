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


def hypergradient_cost(images, labels, train_images, train_labels, *, iterations: int,
                       method: str, l2reg: float = 0.1, repeats: int = 3,
                       **inner_solver_options) -> CompiledCost:
    """Cost of one hypergradient ``grad F(images)`` with exactly ``iterations`` inner steps.

    ``method`` is ``"implicit"`` (implicit differentiation: one linear solve at
    the inner solution) or ``"unrolled"`` (backpropagation through every inner
    iteration). The inner tolerance is set to 1e-30, which no solve reaches,
    so that the inner solver runs all its iterations. Extra options go to the
    inner solver (e.g. ``implicit_diff_solve``).
    """
    from distill import distillation  # a layer above this module's others

    if method not in ("implicit", "unrolled"):
        raise ValueError(f"method must be 'implicit' or 'unrolled', got {method!r}")
    config = distillation.DistillConfig(l2reg=l2reg, inner_tol=1e-30, inner_maxiter=iterations)
    if method == "unrolled":
        inner_solver_options = {**inner_solver_options, "implicit_diff": False}
    objective = distillation.make_outer_objective(config, labels, images.shape[1],
                                                  **inner_solver_options)
    hypergradient = jax.grad(lambda *args: objective(*args)[0])
    return measure_compiled(hypergradient, images, train_images, train_labels, repeats=repeats)
