"""Outer solvers: small objects with ``init`` and ``step`` that move the outer variables.

Each wraps ``fun(variables, *args) -> (loss, aux)``, the outer loss with an
auxiliary output (the distillation loop passes the inner solution and its
error), and drives it one step at a time so that the loop can show progress,
record the loss and save checkpoints between steps:

    solver = Lbfgs(fun)
    state = solver.init(variables, *args)
    variables, state = solver.step(variables, state, *args)

Every state is an :class:`OuterState`: the loss and auxiliary output at the
current variables, the stopping quantity ``error``, and ``failed``, true when
the last step found no point with a lower loss (the variables are then
unchanged). Each solver compiles its programs with ``jax.jit`` on first use;
keep the solver object to reuse them.
"""

from __future__ import annotations

import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import implicit


class OuterState(typing.NamedTuple):
    """Where an outer solver stands.

    Attributes:
      value: the outer loss at the current variables.
      aux: ``fun``'s auxiliary output there.
      error: the stopping quantity, compared with the run's ``outer_tol``
        (``inf`` for a solver without one).
      failed: the last step found no point with a lower loss.
      internal: the solver's own state (optimizer memory, gradient).
    """

    value: jax.Array
    aux: typing.Any
    error: float
    failed: bool
    internal: typing.Any


class Lbfgs:
    """L-BFGS: optax's direction, then a backtracking line search driven from Python.

    Each trial point costs one compiled call of ``value_and_grad(fun)``, the
    same program at every step, and usually the first trial (the full step)
    is accepted. Compiling one small program, rather than a solver loop with
    the line search inside, keeps compilation short.

    A trial is accepted when its loss is strictly lower and meets the
    sufficient-decrease (Armijo) condition; a NaN or infinite loss fails it
    like too small a decrease. After
    ``max_halvings`` halvings of the step without success, the step fails
    (``state.failed``) and the variables stay where they were.

    Args:
      fun: ``fun(variables, *args) -> (loss, aux)``, differentiable in
        ``variables`` (a pytree of arrays).
      memory_size: curvature pairs L-BFGS keeps.
      armijo: the sufficient-decrease constant.
      max_halvings: halvings of the step before it fails.
    """

    def __init__(self, fun, *, memory_size: int = 10, armijo: float = 1e-4,
                 max_halvings: int = 20):
        self.armijo = armijo
        self.max_halvings = max_halvings
        self._lbfgs = optax.scale_by_lbfgs(memory_size=memory_size)
        value_and_grad = jax.value_and_grad(fun, has_aux=True)

        def evaluate(variables, *args):
            (value, aux), gradient = value_and_grad(variables, *args)
            return value, aux, gradient, optax.tree.norm(gradient)

        self._evaluate = jax.jit(evaluate)
        self._init_memory = jax.jit(self._lbfgs.init)
        self._direction = jax.jit(self._direction_impl)
        self._move = jax.jit(lambda variables, updates, stepsize: jax.tree.map(
            lambda v, u: v + stepsize * u, variables, updates))

    def _direction_impl(self, gradient, memory, variables):
        updates, memory = self._lbfgs.update(gradient, memory, variables)
        updates = jax.tree.map(jnp.negative, updates)
        return updates, memory, optax.tree.vdot(gradient, updates)

    @staticmethod
    def _state(value, aux, gradient, gradient_norm, memory) -> OuterState:
        return OuterState(value, aux, float(gradient_norm), False, (memory, gradient))

    def init(self, variables, *args) -> OuterState:
        """The loss, auxiliary output and gradient at ``variables``; an empty memory.

        Args:
          variables: the starting point, a pytree of arrays.
          *args: the further arguments of ``fun``.

        Returns:
          The initial :class:`OuterState`.
        """
        return self._state(*self._evaluate(variables, *args), self._init_memory(variables))

    def step(self, variables, state: OuterState, *args):
        """One L-BFGS step with its line search.

        Args:
          variables: the current point.
          state: the :class:`OuterState` at ``variables``.
          *args: the further arguments of ``fun``.

        Returns:
          ``(variables, state)``: the accepted point, or the same variables
          with ``state.failed`` set when no trial lowered the loss.

        Raises:
          FloatingPointError: when the hypergradient is NaN or infinite at a
            point with a finite loss, or every trial's loss is.
        """
        memory, gradient = state.internal
        updates, new_memory, slope = self._direction(gradient, memory, variables)
        if not float(slope) < 0:
            # Not a descent direction (curvature pairs can mislead on a
            # non-convex problem): forget the memory and step along -gradient.
            updates, new_memory, slope = self._direction(gradient, self._init_memory(variables),
                                                         variables)
        value, slope, stepsize = float(state.value), float(slope), 1.0
        if not np.isfinite(slope):
            raise FloatingPointError(f"the hypergradient became {slope} (its slope along the "
                                     "step) at a point with a finite outer loss")
        finite_trials = 0
        for _ in range(self.max_halvings + 1):
            candidate = self._move(variables, updates, jnp.float32(stepsize))
            trial = self._evaluate(candidate, *args)
            trial_loss = float(trial[0])
            finite_trials += bool(np.isfinite(trial_loss))
            # Strictly lower, too: once the step is tiny, the Armijo term no
            # longer changes ``value`` in floating point, and a trial with the
            # same loss (often the same float32 point) would pass.
            if trial_loss < value and trial_loss <= value + self.armijo * stepsize * slope:
                return candidate, self._state(*trial, new_memory)
            stepsize /= 2
        if not finite_trials:
            raise FloatingPointError(f"the outer loss was NaN or infinite at every trial point "
                                     f"along the step, down to 2^-{self.max_halvings} of it")
        return variables, state._replace(failed=True)


class GradientDescent:
    """JAXopt's ``GradientDescent`` with its line search: the original notebook's outer solver.

    Its ``error`` is JAXopt's (the norm of the last step). The loop, not
    JAXopt's ``run``, decides when to stop, so neither JAXopt's ``tol`` nor
    its ``maxiter`` plays a part.

    Args:
      fun: ``fun(variables, *args) -> (loss, aux)``.

    Raises:
      ImportError: when JAXopt is not installed.
    """

    def __init__(self, fun):
        self._fun = fun
        # JAXopt's, imported here: the other outer solvers do not need it.
        jaxopt = implicit.import_jaxopt(
            needed_for="outer_optimizer='gradient_descent' (JAXopt's GradientDescent, the "
                       "original notebook's: --preset seed)",
            instead="outer_optimizer 'lbfgs' or 'adam'")
        self._solver = jaxopt.GradientDescent(fun=fun, has_aux=True)
        self._init = jax.jit(self._init_impl)
        self._step = jax.jit(self._step_impl)

    def _init_impl(self, variables, *args):
        solver_state = self._solver.init_state(variables, *args)
        return solver_state, self._fun(variables, *args)

    def _step_impl(self, variables, solver_state, *args):
        variables, solver_state = self._solver.update(variables, solver_state, *args)
        return variables, solver_state, self._fun(variables, *args)

    def init(self, variables, *args) -> OuterState:
        """JAXopt's initial state and the loss at ``variables``.

        Args:
          variables: the starting point, a pytree of arrays.
          *args: the further arguments of ``fun``.

        Returns:
          The initial :class:`OuterState` (``error``: JAXopt's, the step norm).
        """
        solver_state, (value, aux) = self._init(variables, *args)
        return OuterState(value, aux, float(solver_state.error), False, solver_state)

    def step(self, variables, state: OuterState, *args):
        """One JAXopt update.

        Args:
          variables: the current point.
          state: the :class:`OuterState` at ``variables``.
          *args: the further arguments of ``fun``.

        Returns:
          ``(variables, state)``: the new point and its :class:`OuterState`.
        """
        variables, solver_state, (value, aux) = self._step(variables, state.internal, *args)
        return variables, OuterState(value, aux, float(solver_state.error), False,
                                     solver_state)


class Adam:
    """optax's Adam at a fixed learning rate, one loss and hypergradient per step.

    Adam has no stopping quantity (``error`` is ``inf``): it runs its steps.

    Args:
      fun: ``fun(variables, *args) -> (loss, aux)``.
      learning_rate: Adam's step size.
    """

    def __init__(self, fun, *, learning_rate: float = 0.01):
        self._optimizer = optax.adam(learning_rate)
        self._value_and_grad = jax.value_and_grad(fun, has_aux=True)
        self._init = jax.jit(self._init_impl)
        self._step = jax.jit(self._step_impl)

    def _init_impl(self, variables, *args):
        (value, aux), gradient = self._value_and_grad(variables, *args)
        return value, aux, (self._optimizer.init(variables), gradient)

    def _step_impl(self, variables, internal, *args):
        # The gradient at the current point was kept from the last call.
        optimizer_state, gradient = internal
        updates, optimizer_state = self._optimizer.update(gradient, optimizer_state, variables)
        variables = optax.apply_updates(variables, updates)
        (value, aux), gradient = self._value_and_grad(variables, *args)
        return variables, value, aux, (optimizer_state, gradient)

    def init(self, variables, *args) -> OuterState:
        """The loss and gradient at ``variables``, Adam's empty moments.

        Args:
          variables: the starting point, a pytree of arrays.
          *args: the further arguments of ``fun``.

        Returns:
          The initial :class:`OuterState` (``error`` is ``inf``).
        """
        value, aux, internal = self._init(variables, *args)
        return OuterState(value, aux, math.inf, False, internal)

    def step(self, variables, state: OuterState, *args):
        """One Adam update.

        Args:
          variables: the current point.
          state: the :class:`OuterState` at ``variables``.
          *args: the further arguments of ``fun``.

        Returns:
          ``(variables, state)``: the new point and its :class:`OuterState`.
        """
        variables, value, aux, internal = self._step(variables, state.internal, *args)
        return variables, OuterState(value, aux, math.inf, False, internal)


def make_outer_solver(name: str, fun, *, learning_rate: float = 0.01):
    """The outer solver a configuration names (``DistillConfig.outer_optimizer``).

    Args:
      name: ``"lbfgs"``, ``"gradient_descent"`` or ``"adam"``.
      fun: ``fun(variables, *args) -> (loss, aux)``.
      learning_rate: Adam's step size.

    Returns:
      An object with ``init`` and ``step``.
    """
    if name == "lbfgs":
        return Lbfgs(fun)
    if name == "gradient_descent":
        return GradientDescent(fun)
    if name == "adam":
        return Adam(fun, learning_rate=learning_rate)
    raise ValueError(f"outer optimizer must be one of 'lbfgs', 'gradient_descent', 'adam', "
                     f"got {name!r}")
