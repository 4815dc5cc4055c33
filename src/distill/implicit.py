"""The inner solve, differentiated implicitly: with JAXopt, or with core JAX alone.

Two backends give the same hypergradient (chapter 4 checks it in float64):

- ``"jaxopt"``: JAXopt's ``GradientDescent`` or ``LBFGS``, whose ``run`` JAXopt
  decorates with ``jaxopt.implicit_diff.custom_root``. This is what the book
  was built on, and the original notebook's solver. JAXopt is archived
  (0.8.5 is its last release).
- ``"jax"``: the forward solve by Optax (its L-BFGS, or steepest descent with
  a backtracking line search) in a ``jax.lax.while_loop``, differentiated
  by ``jax.lax.custom_root``, with conjugate gradient on Hessian-vector
  products as its tangent solve. It needs only JAX and Optax, both maintained,
  and it never imports JAXopt.

Both return a result with JAXopt's shape: ``result.params`` (the solution
``W*``) and ``result.state.error`` (the gradient norm there) and
``result.state.iter_num``, so the loops read either the same way.
"""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import optax

from distill.config import IMPLICIT_DIFF_BACKENDS, INNER_SOLVERS, LINEAR_SOLVERS


def jaxopt_installed() -> bool:
    """Whether JAXopt can be imported here (without importing it).

    Returns:
      True when the ``jaxopt`` package is installed.
    """
    import importlib.util
    return importlib.util.find_spec("jaxopt") is not None


def import_jaxopt(needed_for: str = "implicit_diff='jaxopt'",
                  instead: str = "implicit_diff='jax' (--implicit-diff jax), which does not need it"):
    """JAXopt, imported without its archival warning, or a clear error without it.

    Args:
      needed_for: what asks for JAXopt, for the error message.
      instead: what works without it, for the error message.

    Returns:
      The ``jaxopt`` module.

    Raises:
      ImportError: when JAXopt is not installed, naming ``needed_for`` and ``instead``.
    """
    import warnings
    try:
        with warnings.catch_warnings():
            # JAXopt is archived upstream and says so on import; the book
            # explains this once, so the helper keeps it quiet.
            warnings.filterwarnings("ignore", message="JAXopt is no longer maintained")
            import jaxopt
    except ImportError as error:
        raise ImportError(f"JAXopt is not installed, and {needed_for} needs it: install it "
                          f"(pip install jaxopt==0.8.5), or use {instead}") from error
    return jaxopt


def solve_cg(matvec, b, *, tol: float = 1e-5, maxiter: int | None = None):
    """Solve ``matvec(x) = b`` by conjugate gradient, for a symmetric positive definite map.

    The implicit-differentiation system of a strongly convex inner problem
    has the Hessian as its matrix, which is symmetric positive definite; CG
    needs only its products with vectors.

    Args:
      matvec: the linear map, a function of one pytree.
      b: the right-hand side, a pytree.
      tol: relative residual at which CG stops (JAX's default, 1e-5).
      maxiter: iterations at most (JAX's default when None).

    Returns:
      The solution ``x``, a pytree shaped like ``b``.
    """
    return jax.scipy.sparse.linalg.cg(matvec, b, tol=tol, maxiter=maxiter)[0]


def solve_normal_cg(matvec, b, *, tol: float = 1e-5, maxiter: int | None = None):
    """Solve ``matvec(x) = b`` by CG on the normal equations ``A^T A x = A^T b``.

    JAXopt's default for ``custom_root``: it works for any invertible map,
    symmetric or not, but squares the condition number.

    Args:
      matvec: the linear map, a function of one pytree.
      b: the right-hand side, a pytree.
      tol: relative residual at which CG stops.
      maxiter: iterations at most (JAX's default when None).

    Returns:
      The solution ``x``, a pytree shaped like ``b``.
    """
    transpose = jax.linear_transpose(matvec, b)

    def normal_matvec(x):
        return transpose(matvec(x))[0]

    return solve_cg(normal_matvec, transpose(b)[0], tol=tol, maxiter=maxiter)


#: The core-JAX linear solvers that ``linear_solve`` names.
LINEAR_SOLVES_JAX = {"cg": solve_cg, "normal_cg": solve_normal_cg}


def linear_solve(name: str, backend: str):
    """The implicit-differentiation linear solver ``name`` of ``backend``.

    Args:
      name: one of :data:`distill.config.LINEAR_SOLVERS` (``"cg"``, ``"normal_cg"``).
      backend: one of :data:`distill.config.IMPLICIT_DIFF_BACKENDS`
        (``"jaxopt"``, ``"jax"``).

    Returns:
      ``solve(matvec, b) -> x``: JAXopt's ``solve_cg`` / ``solve_normal_cg``,
      or :func:`solve_cg` / :func:`solve_normal_cg`.

    Raises:
      ValueError: for an unknown name or backend.
    """
    _check_choice(name, LINEAR_SOLVERS, "linear_solve")
    _check_choice(backend, IMPLICIT_DIFF_BACKENDS, "backend")
    if backend == "jaxopt":
        return getattr(import_jaxopt().linear_solve, f"solve_{name}")
    return LINEAR_SOLVES_JAX[name]


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


class InnerState(typing.NamedTuple):
    """Where the core-JAX inner solve stopped (the fields JAXopt's states share).

    Attributes:
      error: the norm of the objective's gradient at the solution.
      iter_num: iterations taken.
    """

    error: jax.Array
    iter_num: jax.Array


class InnerResult(typing.NamedTuple):
    """The core-JAX inner solve's result, shaped like JAXopt's ``OptStep``.

    Attributes:
      params: the solution.
      state: an :class:`InnerState`.
    """

    params: typing.Any
    state: InnerState


class CoreJaxSolver:
    """An inner solver on Optax, differentiated by ``jax.lax.custom_root``.

    ``run(init_params, *args)`` minimizes ``fun(params, *args)`` from
    ``init_params`` until the gradient norm is below ``tol`` or ``maxiter``
    iterations have passed, at least one iteration. ``jax.grad`` through it
    differentiates the solution with respect to ``args`` by the implicit
    function theorem: at the solution the gradient of ``fun`` is zero, so
    ``custom_root`` solves ``H v = g`` with ``implicit_diff_solve`` (``H``
    the Hessian, applied by forward-over-reverse products) and takes one
    vector-Jacobian product. No gradient flows to ``init_params``.

    Args:
      fun: ``fun(params, *args) -> scalar``, smooth and strongly convex in ``params``.
      tol: stop when the gradient norm falls below this.
      maxiter: ... or after this many iterations.
      method: ``"lbfgs"`` (Optax's L-BFGS, with its zoom line search) or
        ``"gradient_descent"`` (steepest descent with a backtracking line
        search; unlike JAXopt's, not accelerated, so it needs more iterations
        on ill-conditioned problems).
      implicit_diff_solve: ``solve(matvec, b) -> x`` for the tangent system
        (default :func:`solve_cg`).
      memory_size: L-BFGS's number of stored updates.
    """

    def __init__(self, fun, *, tol: float, maxiter: int, method: str = "lbfgs",
                 implicit_diff_solve=None, memory_size: int = 10):
        _check_choice(method, INNER_SOLVERS, "method")
        self.fun = fun
        self.tol = tol
        self.maxiter = maxiter
        self.method = method
        self.implicit_diff_solve = implicit_diff_solve or solve_cg
        self.memory_size = memory_size

    def _optimizer(self, dtype):
        if self.method == "lbfgs":
            # Optax's zoom line search (its default) accepts approximate Wolfe
            # conditions near the solution, where the loss's decrease falls
            # below its rounding error: an increase of the loss up to
            # approx_dec_rtol times its size passes. Optax's default, 1e-6,
            # suits float64; in float32, warm-started solves then stall just
            # above a gradient norm of 1e-6, and 1e-3 lets them finish.
            precise = float(jnp.finfo(dtype).eps) < 1e-10
            return optax.lbfgs(memory_size=self.memory_size,
                               linesearch=optax.scale_by_zoom_linesearch(
                                   max_linesearch_steps=30,
                                   approx_dec_rtol=1e-6 if precise else 1e-3))
        # Steepest descent with a backtracking (Armijo) search, which forgives
        # a few units of rounding in the loss for the same reason, and starts
        # from twice the last accepted step, at most 1. Not accelerated, unlike
        # JAXopt's GradientDescent: on ill-conditioned problems it needs more
        # iterations (prefer "lbfgs" there).
        linesearch = optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=30, store_grad=True, rtol=8 * float(jnp.finfo(dtype).eps),
            increase_factor=2.0)
        return optax.chain(optax.sgd(learning_rate=1.0), linesearch)

    def _minimize(self, objective, init_params):
        """The forward solve: ``(params, (gradient norm, iterations))``."""
        optimizer = self._optimizer(jax.tree.leaves(init_params)[0].dtype)
        value_and_grad = optax.value_and_grad_from_state(objective)

        def step(carry):
            params, state, iteration = carry
            value, gradient = value_and_grad(params, state=state)
            updates, state = optimizer.update(gradient, state, params, value=value,
                                              grad=gradient, value_fn=objective)
            return optax.apply_updates(params, updates), state, iteration + 1

        def gradient_norm(state):
            return optax.tree.norm(optax.tree.get(state, "grad"))

        def going_on(carry):
            _, state, iteration = carry
            return (iteration == 0) | ((iteration < self.maxiter)
                                       & (gradient_norm(state) > self.tol))

        params, state, iterations = jax.lax.while_loop(
            going_on, step, (init_params, optimizer.init(init_params), jnp.asarray(0)))
        # custom_root's derivative rule gives its auxiliary outputs float
        # tangents, so the count travels as a float.
        error = gradient_norm(state)
        return params, (error, iterations.astype(error.dtype))

    def run(self, init_params, *args) -> InnerResult:
        """Solve the inner problem at ``args``, differentiably in ``args``.

        Args:
          init_params: where the solve starts (no gradient flows into it).
          *args: the further arguments of ``fun`` (e.g. ``l2reg, (images, labels)``).

        Returns:
          An :class:`InnerResult`: ``params`` the solution, ``state.error``
          the gradient norm there, ``state.iter_num`` the iterations taken.
        """
        init_params = jax.lax.stop_gradient(init_params)

        def optimality(params):
            return jax.grad(self.fun)(params, *args)

        def solve(_, guess):
            return self._minimize(lambda params: self.fun(params, *args), guess)

        def tangent_solve(hessian_product, b):
            # custom_root passes the optimality function linearized at the
            # solution: the Hessian. Reverse mode transposes this solve, so it
            # is declared a linear solve whose transpose solves the transposed
            # map with the same solver (for the symmetric Hessian, itself).
            solve = self.implicit_diff_solve
            return jax.lax.custom_linear_solve(hessian_product, b, solve=solve,
                                               transpose_solve=solve)

        params, (error, iterations) = jax.lax.custom_root(
            optimality, init_params, solve, tangent_solve, has_aux=True)
        return InnerResult(params, InnerState(error, iterations.astype(jnp.int32)))


def make_solver(fun, *, tol: float, maxiter: int, method: str = "gradient_descent",
                backend: str = "jaxopt", implicit_diff: bool = True,
                implicit_diff_solve=None, **options):
    """An inner solver of ``fun``, differentiated implicitly by ``backend``.

    Args:
      fun: ``fun(params, *args) -> scalar``.
      tol: stop when the gradient norm falls below this.
      maxiter: ... or after this many iterations.
      method: ``"gradient_descent"`` or ``"lbfgs"``.
      backend: ``"jaxopt"`` or ``"jax"`` (see the module's docstring).
      implicit_diff: differentiate implicitly (True), or by unrolling the
        iterations (False: JAXopt only).
      implicit_diff_solve: the tangent system's solver ``solve(matvec, b)``;
        by default each backend's own.
      **options: passed to JAXopt's solver (``"jaxopt"`` only).

    Returns:
      A solver with ``run(init_params, *args)``, whose result has ``params``
      and ``state.error`` and ``state.iter_num``.

    Raises:
      ValueError: for an unknown ``method`` or ``backend``, or an option the
        core-JAX backend does not take.
      ImportError: for ``backend="jaxopt"`` when JAXopt is not installed.
    """
    _check_choice(method, INNER_SOLVERS, "method")
    _check_choice(backend, IMPLICIT_DIFF_BACKENDS, "backend")
    if backend == "jax":
        if not implicit_diff:
            raise ValueError("the core-JAX backend (implicit_diff='jax') differentiates "
                             "implicitly only; unrolling needs implicit_diff='jaxopt'")
        unknown = sorted(options)
        if unknown:
            raise ValueError(f"the core-JAX backend takes no option {unknown}; "
                             "those are JAXopt's")
        return CoreJaxSolver(fun, tol=tol, maxiter=maxiter, method=method,
                             implicit_diff_solve=implicit_diff_solve)
    jaxopt = import_jaxopt()
    if implicit_diff_solve is not None:
        options["implicit_diff_solve"] = implicit_diff_solve
    if method == "lbfgs":
        options.setdefault("linesearch", "backtracking")
        return jaxopt.LBFGS(fun=fun, tol=tol, maxiter=maxiter, implicit_diff=implicit_diff,
                            **options)
    return jaxopt.GradientDescent(fun=fun, tol=tol, maxiter=maxiter,
                                  implicit_diff=implicit_diff, **options)


__all__ = ["CoreJaxSolver", "InnerResult", "InnerState", "LINEAR_SOLVES_JAX", "import_jaxopt",
           "jaxopt_installed",
           "linear_solve", "make_solver", "solve_cg", "solve_normal_cg"]
