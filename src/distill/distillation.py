"""The outer problem and the distillation loop.

Given real training data ``(X_tr, y_tr)``, dataset distillation looks for a
few synthetic images ``S`` (with fixed labels ``y_S``) such that the model
trained on them, ``W*(S) = argmin_W L(W; S, y_S, l2reg)``, has a small loss on
the real data:

    min_S  F(S) = mean CE(y_tr, softmax(X_tr @ W*(S)))

``jax.grad(F)`` flows through the inner solver by implicit differentiation
(see the chapter of that name), and the outer solver follows it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from distill import checks, data, model
from distill.model import jaxopt

#: Linear solvers for the implicit-differentiation system, by name. The inner
#: Hessian is symmetric positive definite, so conjugate gradient applies as is;
#: JAXopt's default, ``normal_cg``, runs CG on the normal equations H^T H,
#: which squares the condition number.
LINEAR_SOLVES = {
    "cg": jaxopt.linear_solve.solve_cg,
    "normal_cg": jaxopt.linear_solve.solve_normal_cg,
}

#: Outer optimizers: L-BFGS (optax's direction, a backtracking line search),
#: JAXopt's GradientDescent with its line search (the original notebook's),
#: and optax's Adam.
OUTER_OPTIMIZERS = ("lbfgs", "gradient_descent", "adam")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything that defines one distillation run.

    The defaults are the helper's fast path; ``PRESETS["seed"]`` is the
    original JAXopt notebook's configuration. Both solve the same problem; they
    differ in how (see the chapter "Fast distillation"):

    - ``warm_start``: start each inner solve from the previous outer step's
      solution instead of ``ones((784, 10))``;
    - ``inner_tol``: a tight inner tolerance, cheap once warm-started, so that
      the outer loss and its hypergradient are accurate;
    - ``linear_solve``: the solver of the implicit-differentiation system;
    - ``outer_optimizer``: L-BFGS instead of gradient descent
      (``learning_rate`` is used by Adam only).

    ``learn_l2reg`` and ``learn_labels`` make the outer problem learn more
    than the pixels: ``log(l2reg)`` (starting from ``l2reg``) and soft labels
    (the softmax of learned logits, starting close to the hard labels), each
    through the same implicit differentiation (see the chapter "Beyond
    pixels"). A learned ``l2reg`` becomes small, which makes the inner problem
    ill-conditioned: ``inner_solver="lbfgs"`` then reaches ``inner_tol``
    where gradient descent would stop at ``inner_maxiter``.
    ``CLI_DEFAULT`` is that combination.
    """

    dataset: str = "mnist"
    images_per_class: int = 1
    steps: int = 50            # outer iterations at most (the outer maxiter)
    seed: int = 0              # PRNG seed of the initial distilled images
    l2reg: float = 0.1         # inner L2 regularization
    inner_tol: float = 1e-6
    inner_maxiter: int = 2000
    inner_solver: str = "gradient_descent"  # or "lbfgs" (see model.INNER_SOLVERS)
    outer_tol: float = 1e-3    # stop when the outer solver's error falls below this
    warm_start: bool = True
    linear_solve: str = "cg"
    outer_optimizer: str = "lbfgs"
    learning_rate: float = 0.01
    learn_l2reg: bool = False   # learn log(l2reg) along with the images
    learn_labels: bool = False  # learn soft labels (softmax of logits) along with the images

    def __post_init__(self):
        data.check_dataset_name(self.dataset)
        for name in ("images_per_class", "steps", "inner_maxiter"):
            checks.positive_int(getattr(self, name), name)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("l2reg", "inner_tol", "outer_tol", "learning_rate"):
            checks.positive_number(getattr(self, name), name)
        for name in ("warm_start", "learn_l2reg", "learn_labels"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.inner_solver not in model.INNER_SOLVERS:
            raise ValueError(f"inner_solver must be one of {list(model.INNER_SOLVERS)}, "
                             f"got {self.inner_solver!r}")
        if self.linear_solve not in LINEAR_SOLVES:
            raise ValueError(f"linear_solve must be one of {sorted(LINEAR_SOLVES)}, "
                             f"got {self.linear_solve!r}")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(f"outer_optimizer must be one of {list(OUTER_OPTIMIZERS)}, "
                             f"got {self.outer_optimizer!r}")


#: Named configurations. ``seed`` is the original notebook, exactly: inner
#: GradientDescent from ones to tol 1e-3, JAXopt's default linear solver,
#: outer GradientDescent.
PRESETS = {
    "seed": DistillConfig(inner_tol=1e-3, inner_maxiter=500, warm_start=False,
                          linear_solve="normal_cg",
                          outer_optimizer="gradient_descent"),
    # The original problem (l2reg fixed at 0.1, hard labels) on the fast path:
    # the DistillConfig defaults, as the chapter "Fast distillation" builds them.
    "fixed-l2reg": DistillConfig(),
}

#: The command line's default (``python -m distill`` without ``--preset``):
#: learn l2reg with the images, solve the inner problem with L-BFGS, and let
#: the outer L-BFGS run until its gradient norm is below ``outer_tol`` or its
#: line search finds no lower loss (``stop_reason``; the MNIST run with one
#: image per class ends that way), 300 steps at most. With one to fifty images
#: per class (chapter 8), MNIST took 70-138 steps and Fashion-MNIST 103-151,
#: except all 300 with one image per class. A warm start usually converges in
#: a few dozen inner iterations; the high ``inner_maxiter`` is for the rare
#: solve that needs more.
CLI_DEFAULT = DistillConfig(learn_l2reg=True, inner_solver="lbfgs", inner_maxiter=10_000,
                            steps=300)


@dataclasses.dataclass
class DistillResult:
    images: np.ndarray           # (k, num_features) float32, learned
    labels: np.ndarray           # (k,) int32 when fixed; (k, num_classes) float32 when learned
    l2reg: float                 # the inner l2reg (learned when config.learn_l2reg)
    loss_history: list[float]    # outer loss before step 1, then after each step
    l2reg_history: list[float]   # the inner l2reg at the same points (constant unless learned)
    inner_errors: list[float]    # inner stopping quantity (state.error) at each iterate
    inner_not_converged: int     # iterates whose inner solve stopped at maxiter
    inner_params: np.ndarray     # W*(final images): the model trained on them
    steps: int                   # outer steps taken
    stop_reason: str             # "converged", "max_steps" or "line_search_failed"
    seconds: float               # wall time of the run, compilation included
    compile_seconds: float       # of which compiling (0 when reused from an earlier run)
    config: DistillConfig

    @property
    def final_loss(self) -> float:
        return self.loss_history[-1]


def initial_distilled_set(config: DistillConfig, num_classes: int = 10,
                          num_features: int = 784):
    """The starting point: Gaussian noise scaled by 1/num_features, labels in order.

    With one image per class this is exactly the original notebook's
    ``normal(PRNGKey(0), (10, 784)) / 784`` with labels 0..9.
    """
    k = config.images_per_class * num_classes
    images = jax.random.normal(jax.random.PRNGKey(config.seed), (k, num_features)) / num_features
    labels = jnp.repeat(jnp.arange(num_classes), config.images_per_class)
    return images, labels


#: Initial label logits when labels are learned: softmax gives the true class
#: about 0.94 and the others the rest, evenly.
LABEL_LOGIT_SCALE = 5.0


def initial_variables(config: DistillConfig, images, labels, num_classes: int = 10) -> dict:
    """The outer problem's variables: ``images``, plus what ``config`` learns besides."""
    variables = {"images": jnp.asarray(images, jnp.float32)}
    if config.learn_l2reg:
        variables["log_l2reg"] = jnp.log(jnp.float32(config.l2reg))
    if config.learn_labels:
        variables["label_logits"] = LABEL_LOGIT_SCALE * jax.nn.one_hot(labels, num_classes)
    return variables


def l2reg_and_targets(config: DistillConfig, variables: dict, labels):
    """The inner problem's ``l2reg`` and targets for these outer variables."""
    l2reg = jnp.exp(variables["log_l2reg"]) if "log_l2reg" in variables else config.l2reg
    targets = (jax.nn.softmax(variables["label_logits"]) if "label_logits" in variables
               else labels)
    return l2reg, targets


def make_outer_objective(config: DistillConfig, distilled_labels, num_features: int = 784,
                         num_classes: int = 10, **inner_solver_options):
    """Build ``objective(variables, train_images, train_labels, init_params=None)``.

    The outer loss as a function of all the outer variables (a dict from
    :func:`initial_variables`: ``images``, and ``log_l2reg`` and
    ``label_logits`` when learned). Returns ``(loss, inner)``, the inner
    solver's result as in :func:`make_outer_loss`; ``jax.grad`` with
    ``has_aux=True`` gives the hypergradient with respect to every variable.
    """
    options = {"implicit_diff_solve": LINEAR_SOLVES[config.linear_solve],
               **inner_solver_options}
    if config.learn_labels:
        options.setdefault("objective", model.logistic_objective)  # soft targets
    options.setdefault("method", config.inner_solver)
    inner_solver = model.make_inner_solver(tol=config.inner_tol, maxiter=config.inner_maxiter,
                                           **options)
    inner_init = model.init_inner_params(num_features, num_classes)

    def objective(variables, train_images, train_labels, init_params=None):
        images = variables["images"]
        if init_params is None:
            init_params = inner_init
        init_params = jax.lax.stop_gradient(init_params).astype(images.dtype)
        l2reg, targets = l2reg_and_targets(config, variables, distilled_labels)
        inner = inner_solver.run(init_params, l2reg, (images, targets))
        return model.data_loss(inner.params, train_images, train_labels), inner

    return objective


def make_outer_loss(config: DistillConfig, distilled_labels, num_features: int = 784,
                    num_classes: int = 10, **inner_solver_options):
    """Build ``outer_loss(distilled_images, train_images, train_labels)``.

    The training data are arguments, not closed-over constants: a jitted
    function that closes over a (60000, 784) array embeds it in the compiled
    program, which makes compilation slow.

    Also returns ``outer_loss_and_inner``, the same loss together with the
    inner solver's result from the same single inner solve: its ``params``
    (the trained model ``W*``) and its ``state`` (stopping quantity ``error``
    and ``iter_num``), to check convergence.

    Both take an optional fourth argument ``init_params``, where the inner
    solver starts (by default the original's ``ones``): pass the previous
    solution to warm-start it. Implicit differentiation does not depend on
    where the solver started, so no gradient flows into ``init_params``.

    ``inner_solver_options`` go to :func:`distill.model.make_inner_solver`,
    e.g. ``implicit_diff=False`` to differentiate by unrolling the inner
    iterations, or ``implicit_diff_solve=...`` to override the linear solver
    named by ``config.linear_solve``. Learned ``l2reg`` or labels are not
    variables here (see :func:`make_outer_objective`): this is the loss as a
    function of the images alone, with ``config.l2reg`` and the given labels.
    """
    fixed = dataclasses.replace(config, learn_l2reg=False, learn_labels=False)
    objective = make_outer_objective(fixed, distilled_labels, num_features, num_classes,
                                     **inner_solver_options)

    def outer_loss_and_inner(distilled_images, train_images, train_labels, init_params=None):
        return objective({"images": distilled_images}, train_images, train_labels, init_params)

    def outer_loss(distilled_images, train_images, train_labels, init_params=None):
        return outer_loss_and_inner(distilled_images, train_images, train_labels, init_params)[0]

    return outer_loss, outer_loss_and_inner


class _Engine(typing.NamedTuple):
    """One outer optimizer around the outer loss.

    ``start(run, images, init_params, X, y) -> state`` and
    ``step(run, images, state, init_params, X, y) -> (images, state)``, where
    ``run(fun, *args)`` calls ``jax.jit(fun)`` compiled once for such
    arguments; after either, ``report(state) -> (loss, inner_params,
    inner_error)`` at the current images, ``error(state)``, the quantity
    the stopping rule compares with ``outer_tol``, and ``failed(state)``:
    whether the last step found no point with a lower loss.
    """

    start: typing.Callable
    step: typing.Callable
    report: typing.Callable
    error: typing.Callable
    failed: typing.Callable = lambda state: False


class _AdamState(typing.NamedTuple):
    optimizer: typing.Any
    value: jax.Array
    aux: tuple
    gradient: dict          # hypergradient at the current variables


class _LbfgsState(typing.NamedTuple):
    optimizer: typing.Any   # optax's L-BFGS memory
    value: jax.Array        # outer loss at the current images
    aux: tuple              # (inner solution, inner error) there
    gradient: dict          # hypergradient there, for every variable
    failed: bool            # the last line search found no decrease


#: Line search of the L-BFGS outer steps: sufficient-decrease constant and
#: the most halvings of the step before giving up.
_ARMIJO = 1e-4
_MAX_HALVINGS = 20


def _lbfgs_engine(fun, memory_size: int = 10) -> _Engine:
    """L-BFGS: optax's direction, a backtracking line search driven from Python.

    Each trial point costs one compiled call of ``value_and_grad(fun)``, the
    same program at every step, and usually the first trial (the full step)
    is accepted; compiling one small program instead of a solver loop with
    the line search inside keeps compilation short.
    """
    value_and_grad = jax.value_and_grad(fun, has_aux=True)
    lbfgs = optax.scale_by_lbfgs(memory_size=memory_size)

    def direction(gradient, optimizer_state, variables):
        updates, optimizer_state = lbfgs.update(gradient, optimizer_state, variables)
        updates = jax.tree.map(jnp.negative, updates)
        return updates, optimizer_state, optax.tree.vdot(gradient, updates)

    def move(variables, updates, stepsize):
        return jax.tree.map(lambda v, u: v + stepsize * u, variables, updates)

    def start(run, images, init_params, train_images, train_labels):
        (value, aux), gradient = run(value_and_grad, images, init_params, train_images,
                                     train_labels)
        return _LbfgsState(run(lbfgs.init, images), value, aux, gradient, False)

    def step(run, images, state, init_params, train_images, train_labels):
        updates, optimizer_state, slope = run(direction, state.gradient, state.optimizer,
                                              images)
        if not float(slope) < 0:
            # Not a descent direction (curvature pairs can mislead on a
            # non-convex problem): forget the memory, step along -gradient.
            optimizer_state = run(lbfgs.init, images)
            updates, optimizer_state, slope = run(direction, state.gradient, optimizer_state,
                                                  images)
        value, slope, stepsize = float(state.value), float(slope), 1.0
        if not np.isfinite(slope):
            raise FloatingPointError(f"the hypergradient became {slope} (its slope along the "
                                     "step) at a point with a finite outer loss")
        finite_trials = 0
        for _ in range(_MAX_HALVINGS + 1):
            candidate = run(move, images, updates, jnp.float32(stepsize))
            (new_value, aux), gradient = run(value_and_grad, candidate, init_params,
                                             train_images, train_labels)
            trial_loss = float(new_value)
            finite_trials += bool(np.isfinite(trial_loss))
            # A NaN or infinite trial fails this test: the step is halved, as
            # for a trial that does not decrease the loss enough.
            if trial_loss <= value + _ARMIJO * stepsize * slope:
                return candidate, _LbfgsState(optimizer_state, new_value, aux, gradient, False)
            stepsize /= 2
        if not finite_trials:
            raise FloatingPointError(f"the outer loss was NaN or infinite at every trial point "
                                     f"along the step, down to 2^-{_MAX_HALVINGS} of it")
        return images, state._replace(failed=True)

    return _Engine(start=start, step=step,
                   report=lambda state: (state.value, *state.aux),
                   error=lambda state: float(optax.tree.norm(state.gradient)),
                   failed=lambda state: state.failed)


@functools.lru_cache(maxsize=32)
def _engine(key: DistillConfig, num_classes: int, num_features: int) -> _Engine:
    """The outer solver for ``key`` (a config with its seed, steps and dataset reset).

    Cached, with its compiled programs, so that runs that differ only in seed,
    number of steps or data of the same shape reuse them.
    """
    _, labels = initial_distilled_set(key, num_classes, num_features)
    objective = make_outer_objective(key, labels, num_features, num_classes)

    def fun(variables, init_params, train_images, train_labels):
        loss, inner = objective(variables, train_images, train_labels, init_params)
        return loss, (inner.params, inner.state.error)

    if key.outer_optimizer == "lbfgs":
        return _lbfgs_engine(fun)

    if key.outer_optimizer == "gradient_descent":
        # JAXopt's GradientDescent with its line search, as in the original.
        solver = jaxopt.GradientDescent(fun=fun, has_aux=True, tol=key.outer_tol,
                                        maxiter=key.steps)

        def gd_start(images, init_params, train_images, train_labels):
            state = solver.init_state(images, init_params, train_images, train_labels)
            return state, fun(images, init_params, train_images, train_labels)

        def gd_step(images, state, init_params, train_images, train_labels):
            images, state = solver.update(images, state[0], init_params, train_images,
                                          train_labels)
            return images, (state, fun(images, init_params, train_images, train_labels))

        return _Engine(start=lambda run, *args: run(gd_start, *args),
                       step=lambda run, *args: run(gd_step, *args),
                       report=lambda state: (state[1][0], *state[1][1]),
                       error=lambda state: float(state[0].error))

    optimizer = optax.adam(key.learning_rate)
    value_and_grad = jax.value_and_grad(fun, has_aux=True)

    def adam_start(variables, init_params, train_images, train_labels):
        (value, aux), gradient = value_and_grad(variables, init_params, train_images,
                                                train_labels)
        return _AdamState(optimizer.init(variables), value, aux, gradient)

    def adam_step(variables, state, init_params, train_images, train_labels):
        # One loss-and-hypergradient per step: the gradient at the new point
        # is kept in the state for the next step.
        updates, optimizer_state = optimizer.update(state.gradient, state.optimizer, variables)
        variables = optax.apply_updates(variables, updates)
        (value, aux), gradient = value_and_grad(variables, init_params, train_images,
                                                train_labels)
        return variables, _AdamState(optimizer_state, value, aux, gradient)

    return _Engine(start=lambda run, *args: run(adam_start, *args),
                   step=lambda run, *args: run(adam_step, *args),
                   report=lambda state: (state.value, *state.aux),
                   error=lambda state: math.inf)  # Adam has no stopping quantity


def distill(train_images, train_labels, config: DistillConfig = DistillConfig(), *,
            init_images=None, init_l2reg=None, init_labels=None, num_classes: int = 10,
            progress: bool = True, callback=None, checkpoint=None,
            checkpoint_every: int = 10) -> DistillResult:
    """Learn ``config.images_per_class`` images per class for ``(train_images, train_labels)``.

    The outer solver (``config.outer_optimizer``) is stepped one iteration at
    a time so that the loop can show progress and record the outer loss. It
    stops, like JAXopt's ``solver.run``, after ``config.steps`` iterations or
    when its error (L-BFGS: gradient norm; GradientDescent: step norm) falls
    below ``config.outer_tol``. Its step is compiled once, on first use, and
    reused by later calls with the same settings and data shapes
    (``compile_seconds`` in the result is zero then).

    ``init_images`` replaces the initial noise, e.g. to resume a run from a
    saved set (an L-BFGS run then starts with an empty memory); with
    ``config.learn_l2reg`` or ``config.learn_labels``, ``init_l2reg`` and
    ``init_labels`` (soft, (k, num_classes)) likewise replace their starting
    values.

    ``callback(step, images, inner_params)``, if given, is called with the
    initial images (step 0) and after every outer step, with the inner
    solution ``W*`` trained on those images: use it to follow, say, the test
    accuracy along the way.

    ``checkpoint(images, labels, l2reg, loss_history)``, if given, is called
    every ``checkpoint_every`` steps, and with the last completed step when
    the run is interrupted (``KeyboardInterrupt``, which is then raised
    again) or its outer loss becomes NaN or infinite (``FloatingPointError``,
    likewise): use it to save the set so that a stopped run can be resumed.

    Bad input raises ``ValueError`` naming the argument: training images that
    are not a finite floating-point (n, pixels) array, labels outside
    ``0..num_classes-1`` or not one per image, a class without training
    images, initial values of the wrong shape or not finite.

    When the inner solver stops at ``inner_maxiter`` before ``inner_tol``,
    the hypergradient at that iterate is not that of the true inner solution:
    the run warns (``RuntimeWarning``, with the largest error reached) and
    counts such iterates in ``inner_not_converged``.

    ``stop_reason`` in the result says why the run ended: ``"converged"``
    (the error fell below ``outer_tol``), ``"max_steps"``, or
    ``"line_search_failed"``: no step along the L-BFGS direction, down to
    2^-20 of it, lowered the loss. The set is then the last point that did.
    It is how the default runs usually end: once the loss is flat to within
    the accuracy of the inner solves (and float32), no decrease can be
    measured, although the outer gradient norm is still above
    ``outer_tol``. The failed step is not counted in ``steps``.
    """
    start = time.perf_counter()
    num_classes = checks.positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    train_images = checks.images(train_images, "train_images")
    train_labels = checks.labels(train_labels, "train_labels", num_classes=num_classes,
                                 count=len(train_images), soft=False,
                                 images_name="train_images")
    empty = np.flatnonzero(np.bincount(train_labels, minlength=num_classes) == 0)
    if len(empty):
        raise ValueError(f"train_labels have no example of class(es) "
                         f"{', '.join(map(str, empty[:10]))} among num_classes={num_classes}: "
                         "a distilled image of a class needs real images of it")
    checkpoint_every = checks.positive_int(checkpoint_every, "checkpoint_every")
    # The run computes in float32, as the distilled set it returns, even where
    # 64-bit mode is on and the data are float64 (mixed, the inner solver's
    # implicit differentiation would meet two dtypes).
    train_images = jnp.asarray(train_images, jnp.float32)
    train_labels = jnp.asarray(train_labels)
    num_features = train_images.shape[1]
    images, labels = initial_distilled_set(config, num_classes, num_features)
    if init_images is not None:
        init_images = checks.images(init_images, "init_images")
        if init_images.shape != (len(labels), num_features):
            raise ValueError(f"init_images must have shape {(len(labels), num_features)}, "
                             f"got {init_images.shape}")
        images = jnp.asarray(init_images, dtype=jnp.float32)
    variables = initial_variables(config, images, labels, num_classes)
    if init_l2reg is not None:
        init_l2reg = checks.positive_number(init_l2reg, "init_l2reg")
        if config.learn_l2reg:
            variables["log_l2reg"] = jnp.log(jnp.float32(init_l2reg))
        elif not np.isclose(init_l2reg, config.l2reg, rtol=1e-6, atol=0):
            raise ValueError(f"init_l2reg={init_l2reg:g} differs from config.l2reg="
                             f"{config.l2reg:g}, which this run keeps fixed: set "
                             "learn_l2reg=True to start from it, or l2reg to use it")
    if init_labels is not None:
        if not config.learn_labels:
            raise ValueError("init_labels are soft labels to start learning from: set "
                             "learn_labels=True (fixed labels are 0..num_classes-1 in order)")
        init_labels = checks.labels(np.asarray(init_labels, np.float32), "init_labels",
                                    num_classes=num_classes)
        if init_labels.shape != (len(labels), num_classes):
            raise ValueError(f"init_labels must be soft labels of shape "
                             f"{(len(labels), num_classes)}, got {init_labels.shape}")
        variables["label_logits"] = jnp.log(jnp.clip(jnp.asarray(init_labels), 1e-12, 1.0))

    key = dataclasses.replace(config, dataset="mnist", seed=0, steps=1)
    engine = _engine(key, num_classes, num_features)
    first_init = model.init_inner_params(num_features, num_classes)
    args = (train_images, train_labels)
    compile_seconds = 0.0

    def run(fun, *fun_args):
        nonlocal compile_seconds
        compiled_fun, seconds = _compiled(fun, *fun_args)
        compile_seconds += seconds
        return compiled_fun(*fun_args)

    def as_set(variables):
        """``(images, labels, l2reg)`` of the distilled set the variables describe."""
        l2reg, targets = l2reg_and_targets(config, variables, labels)
        targets = np.asarray(targets, np.float32 if config.learn_labels else np.int32)
        return np.asarray(variables["images"], np.float32), targets, float(l2reg)

    state = engine.start(run, variables, first_init, *args)

    losses: list[float] = []
    l2regs: list[float] = []
    inner_errors: list[float] = []

    def record(state, variables):
        loss, inner_params, inner_error = engine.report(state)
        loss = float(loss)
        if not np.isfinite(loss):
            where = (f"at step {len(losses)} (the last finite loss, {losses[-1]:.4g}, was at "
                     f"step {len(losses) - 1})" if losses else "at the initial distilled set")
            raise FloatingPointError(f"the outer loss became {loss} {where}")
        losses.append(loss)
        l2regs.append(float(l2reg_and_targets(config, variables, labels)[0]))
        inner_errors.append(float(inner_error))
        if callback is not None:
            callback(len(losses) - 1, variables["images"], inner_params)
        return loss, inner_params

    def unconverged():
        # NaN counts too: an inner solve that blew up did not converge either.
        return sum(not error <= config.inner_tol for error in inner_errors)

    _, inner_params = record(state, variables)
    steps = 0
    stop_reason = "max_steps"
    try:
        with tqdm(total=config.steps, desc="outer steps", disable=not progress,
                  mininterval=1.0) as bar:
            # Same stopping rule as jaxopt's run(): one step, then while error > tol.
            while True:
                init_params = inner_params if config.warm_start else first_init
                try:
                    new_variables, state = engine.step(run, variables, state, init_params,
                                                       *args)
                except FloatingPointError as error:
                    raise FloatingPointError(
                        f"{error}, at step {steps + 1} (the last finite loss, "
                        f"{losses[-1]:.4g}, was at step {steps})") from None
                if engine.failed(state):
                    stop_reason = "line_search_failed"
                    break
                loss, inner_params = record(state, new_variables)
                variables, steps = new_variables, steps + 1
                bar.update(1)
                postfix = {"outer_loss": f"{loss:.4f}"}
                if unconverged():
                    postfix["inner_at_maxiter"] = unconverged()
                bar.set_postfix(postfix, refresh=False)
                if checkpoint is not None and steps % checkpoint_every == 0:
                    checkpoint(*as_set(variables), list(losses))
                if not engine.error(state) > config.outer_tol:
                    stop_reason = "converged"
                    break
                if steps >= config.steps:
                    break
    except (KeyboardInterrupt, FloatingPointError):
        if checkpoint is not None and losses:
            # ``variables`` and ``losses[:steps + 1]`` always describe the last
            # completed step, whose loss was finite.
            checkpoint(*as_set(variables), list(losses[:steps + 1]))
        raise

    not_converged = unconverged()
    if not_converged:
        warnings.warn(
            f"the inner solver stopped at maxiter={config.inner_maxiter} before reaching "
            f"tol={config.inner_tol} at {not_converged} of {len(inner_errors)} iterates "
            f"(largest error reached {max(inner_errors, key=lambda e: np.inf if np.isnan(e) else e):.3g}); "
            "the hypergradients there are not those of the true inner solution: raise "
            + ("inner_maxiter, or use inner_solver='lbfgs'"
               if config.inner_solver == "gradient_descent"
               else "inner_maxiter, or inner_tol if float32 cannot reach it"),
            RuntimeWarning, stacklevel=2)
    final_images, final_labels, final_l2reg = as_set(variables)
    return DistillResult(
        images=final_images,
        labels=final_labels,
        l2reg=final_l2reg,
        loss_history=losses,
        l2reg_history=l2regs,
        inner_errors=inner_errors,
        inner_not_converged=not_converged,
        inner_params=np.asarray(inner_params),
        steps=steps,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - start,
        compile_seconds=compile_seconds,
        config=config,
    )


_COMPILED: dict = {}


def _compiled(fun, *args):
    """``jax.jit(fun)`` compiled ahead of time for arguments like ``args``.

    Returns the compiled function and the seconds spent compiling it now (0
    when an earlier call already compiled it for the same argument types).
    """
    leaves, treedef = jax.tree_util.tree_flatten(args)
    signature = (fun, treedef, tuple(jax.typeof(leaf) for leaf in leaves))
    if signature in _COMPILED:
        return _COMPILED[signature], 0.0
    start = time.perf_counter()
    _COMPILED[signature] = jax.jit(fun).lower(*args).compile()
    return _COMPILED[signature], time.perf_counter() - start
