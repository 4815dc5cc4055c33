"""Measuring a compiled JAX function: compilation time, run time, working memory."""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax


@dataclasses.dataclass(frozen=True)
class CompiledCost:
    """What one compiled function costs, as :func:`measure_compiled` measures it.

    Attributes:
      compile_seconds: tracing, lowering and XLA compilation (wall time).
      run_seconds: median wall time of one call, after a warm-up call.
      temp_bytes: working memory XLA allocates for one call (arguments and
        outputs excluded), from its memory analysis.
      output: what the function returned.
      argument_bytes: the arguments' size, from the same analysis. For a
        program compiled for several devices, this and ``temp_bytes`` are
        what each device holds.
    """

    compile_seconds: float
    run_seconds: float
    temp_bytes: int
    output: object
    argument_bytes: int = 0


def measure_compiled(fun, *args, repeats: int = 5) -> CompiledCost:
    """Compile ``jax.jit(fun)`` for ``args``, then time ``repeats`` calls.

    ``temp_bytes`` is XLA's own account of the buffers the compiled program
    needs while it runs (``compiled.memory_analysis().temp_size_in_bytes``):
    the peak memory of the computation beyond its inputs and outputs,
    deterministic, and the same on a busy machine as on an idle one.

    Args:
      fun: the function to compile; JAX-traceable in all of ``args``.
      *args: its arguments (arrays or pytrees of arrays).
      repeats: timed calls, after one untimed warm-up call.

    Returns:
      A :class:`CompiledCost`; its ``output`` is the warm-up call's result.

    Raises:
      ValueError: when ``repeats`` is below 1.
      RuntimeError: when the backend gives no memory analysis.
    """
    return measure_compiled_side_by_side({"fun": fun}, *args, repeats=repeats)["fun"]


def measure_compiled_side_by_side(functions: dict, *args, repeats: int = 21,
                                  arguments: dict | None = None) -> dict:
    """:func:`measure_compiled` for several functions of the same arguments, their calls interleaved.

    Each round calls every function once, in turn (starting with the next
    function each round, so that none always follows the same one), so that
    all of them meet the same load on a shared machine: their medians
    compare even where the load changes over the measurement, which timing
    one function after the other does not give.

    Args:
      functions: ``{name: fun}``, each JAX-traceable in all of ``args``.
      *args: their arguments (arrays or pytrees of arrays).
      repeats: timed rounds, after one untimed warm-up call of each.
      arguments: ``{name: args}``, a tuple of arguments for each function
        instead of the shared ``args`` (e.g. the same data placed on
        different devices).

    Returns:
      ``{name: CompiledCost}``; each ``output`` is the warm-up call's result.

    Raises:
      ValueError: when ``functions`` is empty or ``repeats`` is below 1.
      RuntimeError: when the backend gives no memory analysis.
    """
    if not functions:
        raise ValueError("functions is empty: give at least one {name: fun}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if arguments is not None and set(arguments) != set(functions):
        raise ValueError(f"arguments must name the same functions as functions, got "
                         f"{sorted(arguments)} for {sorted(functions)}")
    if arguments is not None and args:
        raise ValueError("give the shared *args or arguments for each function, not both")
    arguments = {name: tuple(args) for name in functions} if arguments is None else arguments
    compiled, compile_seconds, outputs = {}, {}, {}
    for name, fun in functions.items():
        start = time.perf_counter()
        compiled[name] = jax.jit(fun).lower(*arguments[name]).compile()
        compile_seconds[name] = time.perf_counter() - start
        outputs[name] = jax.block_until_ready(compiled[name](*arguments[name]))
    times = {name: [] for name in functions}
    names = list(functions)
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            jax.block_until_ready(compiled[name](*arguments[name]))
            times[name].append(time.perf_counter() - start)
    costs = {}
    for name, program in compiled.items():
        analysis = program.memory_analysis()
        if analysis is None:
            raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis")
        costs[name] = CompiledCost(compile_seconds[name], statistics.median(times[name]),
                                   int(analysis.temp_size_in_bytes), outputs[name],
                                   int(analysis.argument_size_in_bytes))
    return costs


def hypergradient_cost(images, labels, train_images, train_labels, *, iterations: int,
                       method: str, l2reg: float = 0.1, repeats: int = 3,
                       **inner_solver_options) -> CompiledCost:
    """Cost of one hypergradient ``grad F(images)`` with exactly ``iterations`` inner steps.

    ``method`` is ``"implicit"`` (implicit differentiation: one linear solve at
    the inner solution) or ``"unrolled"`` (backpropagation through every inner
    iteration). The inner tolerance is set to 1e-30, which no solve reaches,
    so that the inner solver runs all its iterations. The rest of the
    configuration is :class:`~distill.config.DistillConfig`'s defaults.

    Args:
      images: (k, num_features) distilled images, where the hypergradient is
        taken.
      labels: (k,) integer classes of the distilled images.
      train_images: (n, num_features) real training images.
      train_labels: (n,) their integer classes.
      iterations: inner iterations, all of them run.
      method: ``"implicit"`` or ``"unrolled"``.
      l2reg: the inner L2 strength.
      repeats: timed calls (:func:`measure_compiled`).
      **inner_solver_options: passed to the inner solver
        (:func:`distill.model.make_inner_solver`), e.g. ``implicit_diff_solve``.

    Returns:
      The :class:`CompiledCost` of ``jax.grad`` of the outer loss; its
      ``output`` is the (k, num_features) hypergradient.

    Raises:
      ValueError: for another ``method``, or a configuration
        :class:`~distill.config.DistillConfig` refuses (e.g. ``iterations``
        not a positive integer).
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
