"""The outer problem and the distillation loop.

Given real training data ``(X_tr, y_tr)``, dataset distillation looks for a
few synthetic images ``S`` (with labels ``y_S``) such that the model trained
on them, ``W*(S) = argmin_W L(W; S, y_S, l2reg)``, has a small loss on the
real data:

    min_S  F(S) = mean CE(y_tr, softmax(X_tr @ W*(S)))

:func:`make_outer_objective` builds ``F`` for logistic regression;
``jax.grad`` flows through its inner solver by implicit differentiation (see
the chapter of that name). :func:`distill` runs an outer solver
(:mod:`distill.outer`) on any such objective, one step at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from distill import checks, implicit, model, outer, sharding
from distill.config import PRESETS, DistillConfig  # noqa: F401  (re-exported for the chapters)
from distill.config import LINEAR_SOLVERS


def __getattr__(name):
    # ``LINEAR_SOLVES``: JAXopt's implicit-differentiation linear solvers,
    # by the names ``DistillConfig.linear_solve`` takes (JAXopt is imported
    # on first use; the core-JAX backend never needs it).
    if name == "LINEAR_SOLVES":
        return {solver: implicit.linear_solve(solver, "jaxopt") for solver in LINEAR_SOLVERS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Initial label logits when labels are learned: the softmax of
#: ``LABEL_LOGIT_SCALE * one_hot`` starts each label close to its hard class.
LABEL_LOGIT_SCALE = 5.0


@dataclasses.dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
      images: (k, num_features) float32, the learned images.
      labels: (k,) int32 when fixed; (k, num_classes) float32 soft labels when learned.
      l2reg: the inner ``l2reg`` (learned when ``config.learn_l2reg``).
      loss_history: the outer loss before step 1, then after each step.
      l2reg_history: the inner ``l2reg`` at the same points.
      inner_errors: the inner solver's stopping quantity at each of those points.
      inner_not_converged: how many of them stopped at ``inner_maxiter``.
      inner_params: the inner solution at the final set: the model trained on it.
      steps: outer steps taken.
      stop_reason: ``"converged"``, ``"max_steps"`` or ``"line_search_failed"``.
      seconds: wall time of the run, compilation included.
      compile_seconds: of which compiling (0 when an earlier run compiled the same programs).
      config: the configuration of the run.
      data_split: how the real data were split over the devices
        (:class:`distill.sharding.ExampleSplit`).
    """

    images: np.ndarray
    labels: np.ndarray
    l2reg: float
    loss_history: list[float]
    l2reg_history: list[float]
    inner_errors: list[float]
    inner_not_converged: int
    inner_params: typing.Any
    steps: int
    stop_reason: str
    seconds: float
    compile_seconds: float
    config: DistillConfig
    data_split: sharding.ExampleSplit | None = None

    @property
    def final_loss(self) -> float:
        """The outer loss at the final set: the last of ``loss_history``."""
        return self.loss_history[-1]


def initial_distilled_set(config: DistillConfig, num_classes: int = 10,
                          num_features: int = 784):
    """The starting point: Gaussian noise scaled by ``1 / num_features``, labels in order.

    With one image per class this is exactly the original notebook's
    ``normal(PRNGKey(0), (10, 784)) / 784`` with labels 0..9.

    Args:
      config: its ``seed`` and ``images_per_class`` are used.
      num_classes: the number of classes.
      num_features: the pixels per image.

    Returns:
      ``(images, labels)``: (k, num_features) and (k,) with
      ``k = config.images_per_class * num_classes``.
    """
    k = config.images_per_class * num_classes
    images = jax.random.normal(jax.random.PRNGKey(config.seed), (k, num_features)) / num_features
    labels = jnp.repeat(jnp.arange(num_classes), config.images_per_class)
    return images, labels


def initial_variables(config: DistillConfig, images, labels, num_classes: int = 10) -> dict:
    """The outer problem's variables: ``images``, and what ``config`` learns besides.

    Args:
      config: its ``learn_l2reg``, ``learn_labels`` and starting ``l2reg`` are used.
      images: (k, num_features) starting images.
      labels: (k,) integer classes of the images.
      num_classes: the number of classes.

    Returns:
      A dict with ``"images"``, plus ``"log_l2reg"`` (from ``config.l2reg``)
      when ``config.learn_l2reg`` and ``"label_logits"`` (close to ``labels``)
      when ``config.learn_labels``.
    """
    variables = {"images": jnp.asarray(images, jnp.float32)}
    if config.learn_l2reg:
        variables["log_l2reg"] = jnp.log(jnp.float32(config.l2reg))
    if config.learn_labels:
        variables["label_logits"] = LABEL_LOGIT_SCALE * jax.nn.one_hot(labels, num_classes)
    return variables


def l2reg_and_targets(config: DistillConfig, variables: dict, labels):
    """The inner problem's ``l2reg`` and targets for these outer variables.

    Args:
      config: gives ``l2reg`` when it is not learned.
      variables: the outer variables (:func:`initial_variables`).
      labels: (k,) integer classes, the targets when labels are not learned.

    Returns:
      ``(l2reg, targets)``: the learned ``exp(log_l2reg)`` or ``config.l2reg``;
      the learned soft labels or ``labels``.
    """
    l2reg = jnp.exp(variables["log_l2reg"]) if "log_l2reg" in variables else config.l2reg
    targets = (jax.nn.softmax(variables["label_logits"]) if "label_logits" in variables
               else labels)
    return l2reg, targets


def make_outer_objective(config: DistillConfig, distilled_labels, num_features: int = 784,
                         num_classes: int = 10, **inner_solver_options):
    """The outer loss of logistic regression, through its inner solver.

    The inner solver is ``config``'s (:func:`distill.model.make_inner_solver`),
    differentiated implicitly with ``config.linear_solve`` by
    ``config.implicit_diff`` (JAXopt, or core JAX's ``custom_root``). The training data
    are arguments, not closed-over constants: a jitted function that closes
    over a (60000, 784) array embeds it in the compiled program, which makes
    compilation slow.

    Args:
      config: the solvers, tolerances and ``l2reg``; what it learns besides
        the images decides which variables the objective reads.
      distilled_labels: (k,) classes of the distilled images (the targets
        unless labels are learned).
      num_features, num_classes: the model's shape.
      **inner_solver_options: passed to :func:`distill.model.make_inner_solver`,
        e.g. ``implicit_diff=False`` to differentiate by unrolling the inner
        iterations, or ``implicit_diff_solve=...`` to replace the linear solver.

    Returns:
      ``objective(variables, train_images, train_labels, init_params=None,
      train_weights=None) -> (loss, inner)``. ``variables`` is the images array, or a dict from
      :func:`initial_variables` (``images``, and ``log_l2reg`` and
      ``label_logits`` when learned). ``inner`` is the inner solver's result
      from the same single solve: its ``params`` (the trained model ``W*``)
      and ``state`` (``error`` and ``iter_num``, to check convergence).
      ``init_params`` is where the inner solver starts (by default the
      original's ``ones``): pass the previous solution to warm-start it. No
      gradient flows into it: implicit differentiation does not depend on
      where the solver started. ``train_weights`` weigh the real examples
      (:func:`distill.model.data_loss`; None: all equal).
      ``jax.grad(objective, has_aux=True)`` gives the hypergradient with
      respect to every variable.
    """
    options = {"implicit_diff_solve": implicit.linear_solve(config.linear_solve,
                                                            config.implicit_diff),
               "backend": config.implicit_diff, **inner_solver_options}
    if config.learn_labels:
        options.setdefault("objective", model.logistic_objective)  # soft targets
    options.setdefault("method", config.inner_solver)
    inner_solver = model.make_inner_solver(tol=config.inner_tol, maxiter=config.inner_maxiter,
                                           **options)
    inner_init = model.init_inner_params(num_features, num_classes)

    def objective(variables, train_images, train_labels, init_params=None, train_weights=None):
        if not isinstance(variables, dict):
            variables = {"images": variables}
        images = variables["images"]
        if init_params is None:
            init_params = inner_init
        init_params = jax.lax.stop_gradient(init_params).astype(images.dtype)
        l2reg, targets = l2reg_and_targets(config, variables, distilled_labels)
        inner = inner_solver.run(init_params, l2reg, (images, targets))
        return model.data_loss(inner.params, train_images, train_labels, train_weights), inner

    return objective


# The compile time a run reports is what JAX itself reports: lowering to XLA
# and XLA's compilation, summed over every program compiled during the run.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]


def _count_compile_time(event, duration, **_):
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_count_compile_time)


@functools.lru_cache(maxsize=32)
def _logistic_regression_objective(key: DistillConfig, num_classes: int, num_features: int):
    """The objective :func:`distill` uses by default, one per setting (cached, so
    that runs that differ only in seed or number of steps share it)."""
    _, labels = initial_distilled_set(key, num_classes, num_features)
    return make_outer_objective(key, labels, num_features, num_classes)


@functools.lru_cache(maxsize=32)
def _outer_solver(objective, outer_optimizer: str, learning_rate: float):
    """An outer solver around ``objective``, kept with its compiled programs."""
    def fun(variables, init_params, train_images, train_labels, *weights):
        # ``weights`` is empty, or the padded data's example weights.
        loss, inner = objective(variables, train_images, train_labels, init_params,
                                *weights)
        return loss, (inner.params, inner.state.error)

    return outer.make_outer_solver(outer_optimizer, fun, learning_rate=learning_rate)


def distill(train_images, train_labels, config: DistillConfig = DistillConfig(), *,
            objective=None, init_inner_params=None, init_images=None, init_l2reg=None,
            init_labels=None, num_classes: int = 10, mesh=None, progress: bool = True,
            callback=None, checkpoint=None, checkpoint_every: int = 10) -> DistillResult:
    """Learn ``config.images_per_class`` images per class for ``(train_images, train_labels)``.

    Setup, loop, result. The outer solver (``config.outer_optimizer``, see
    :mod:`distill.outer`) is stepped one iteration at a time, so that the loop
    can show progress, record the outer loss and save checkpoints. Like
    JAXopt's ``solver.run``, it takes one step, then goes on while its error
    (L-BFGS: gradient norm; gradient descent: step norm) is above
    ``config.outer_tol``, ``config.steps`` steps at most. Its programs are
    compiled on first use and reused by later calls with the same settings
    and data shapes (``compile_seconds`` is then zero).

    The inner model is logistic regression unless ``objective`` says
    otherwise: any ``objective(variables, train_images, train_labels,
    init_params) -> (loss, inner)`` shaped like :func:`make_outer_objective`'s,
    with ``init_inner_params`` where its inner solver first starts (it also
    takes ``train_weights`` when the data are padded, below). Keep the same
    ``objective`` object across runs to reuse its compiled programs.

    The real data are split over the devices of ``mesh`` along the examples
    (:mod:`distill.sharding`); the distilled set and the inner solution are
    whole on every device. With one device that is a mesh of one. When the
    example count is not a multiple of the device count, the data are padded
    with examples of weight zero.

    Args:
      train_images: (n, num_features) floating-point real images.
      train_labels: (n,) integer classes, every class present.
      config: the run's :class:`~distill.config.DistillConfig`.
      objective: the outer objective (default: logistic regression's).
      init_inner_params: the inner solver's first starting point (default
        :func:`distill.model.init_inner_params`); later ones are the previous
        solution when ``config.warm_start``.
      init_images: replaces the initial noise, e.g. to resume a saved set (an
        L-BFGS run then starts with an empty memory).
      init_l2reg: with ``config.learn_l2reg``, the starting ``l2reg``.
      init_labels: with ``config.learn_labels``, starting soft labels (k, num_classes).
      num_classes: the number of classes (at least 2).
      mesh: the devices (:func:`distill.sharding.make_mesh`); all that JAX
        sees when None.
      progress: show a progress bar.
      callback: ``callback(step, images, inner_params)``, called with the
        initial images (step 0) and after every outer step, with the inner
        solution trained on them: use it to follow, say, the test accuracy.
      checkpoint: ``checkpoint(images, labels, l2reg, loss_history)``, called
        every ``checkpoint_every`` steps, and with the last completed step
        when the run is interrupted (``KeyboardInterrupt``, raised again) or
        its outer loss becomes NaN or infinite (``FloatingPointError``,
        likewise): save the set there so that a stopped run can be resumed.
      checkpoint_every: steps between checkpoints.

    Returns:
      A :class:`DistillResult`. Its ``stop_reason`` says why the run ended:
      ``"converged"`` (the error fell below ``outer_tol``), ``"max_steps"``,
      or ``"line_search_failed"``: no step along the L-BFGS direction, down to
      2^-20 of it, lowered the loss, and the set is the last point that did.
      That is how runs of the ``"learned-l2reg"`` preset usually end: once the
      loss is flat to within the accuracy of the inner solves (and float32),
      no decrease can be measured although the outer gradient norm is still
      above ``outer_tol``. The failed step is not counted in ``steps``.

    Raises:
      ValueError: naming the argument, for training images that are not a
        finite floating-point (n, pixels) array, labels outside
        ``0..num_classes-1`` or not one per image, a class without training
        images, or initial values of the wrong shape or not finite.
      FloatingPointError: when the outer loss becomes NaN or infinite.

    Warns:
      RuntimeWarning: when inner solves stopped at ``inner_maxiter`` before
        ``inner_tol``: the hypergradient there is not that of the true inner
        solution. ``inner_not_converged`` counts them.
    """
    # Setup: check the input, build the outer variables and the solver.
    start = time.perf_counter()
    compile_seconds_before = _compile_seconds[0]
    train_images, train_labels = _checked_training_data(train_images, train_labels,
                                                        num_classes)
    checkpoint_every = checks.positive_int(checkpoint_every, "checkpoint_every")
    num_features = train_images.shape[1]
    images, labels = initial_distilled_set(config, num_classes, num_features)
    if init_images is not None:
        images = _checked_init_images(init_images, (len(labels), num_features))
    variables = initial_variables(config, images, labels, num_classes)
    variables.update(_initial_learned_values(config, init_l2reg, init_labels,
                                             (len(labels), num_classes)))
    if objective is None:
        key = dataclasses.replace(config, seed=0, steps=1)  # what the programs depend on
        objective = _logistic_regression_objective(key, num_classes, num_features)
    if init_inner_params is None:
        init_inner_params = model.init_inner_params(num_features, num_classes)
    solver = _outer_solver(objective, config.outer_optimizer, config.learning_rate)
    mesh = sharding.make_mesh() if mesh is None else mesh
    (train_images, train_labels), train_weights, data_split = sharding.shard_examples(
        mesh, train_images, train_labels)
    data = (train_images, train_labels) + (() if train_weights is None else (train_weights,))
    variables, init_inner_params = sharding.replicate(mesh, (variables, init_inner_params))

    def as_set(variables):
        """``(images, labels, l2reg)`` of the distilled set the variables describe."""
        l2reg, targets = l2reg_and_targets(config, variables, labels)
        targets = np.asarray(targets, np.float32 if config.learn_labels else np.int32)
        return np.asarray(variables["images"], np.float32), targets, float(l2reg)

    losses: list[float] = []
    l2regs: list[float] = []
    inner_errors: list[float] = []

    def record(state, variables):
        loss = float(state.value)
        inner_params, inner_error = state.aux
        if not np.isfinite(loss):
            where = (f"at step {len(losses)} (the last finite loss, {losses[-1]:.4g}, was at "
                     f"step {len(losses) - 1})" if losses else "at the initial distilled set")
            raise FloatingPointError(f"the outer loss became {loss} {where}")
        losses.append(loss)
        l2regs.append(float(l2reg_and_targets(config, variables, labels)[0]))
        inner_errors.append(float(inner_error))
        if callback is not None:
            callback(len(losses) - 1, variables["images"], inner_params)
        return loss

    def unconverged():
        # NaN counts too: an inner solve that blew up did not converge either.
        return sum(not error <= config.inner_tol for error in inner_errors)

    # The loop: one outer step at a time.
    state = solver.init(variables, init_inner_params, *data)
    record(state, variables)
    steps, stop_reason = 0, "max_steps"
    try:
        with tqdm(total=config.steps, desc="outer steps", disable=not progress,
                  mininterval=1.0) as bar:
            while True:
                warm_start = state.aux[0] if config.warm_start else init_inner_params
                try:
                    new_variables, state = solver.step(variables, state, warm_start, *data)
                except FloatingPointError as error:
                    raise FloatingPointError(
                        f"{error}, at step {steps + 1} (the last finite loss, "
                        f"{losses[-1]:.4g}, was at step {steps})") from None
                if state.failed:
                    stop_reason = "line_search_failed"
                    break
                loss = record(state, new_variables)
                variables, steps = new_variables, steps + 1
                bar.update(1)
                postfix = {"outer_loss": f"{loss:.4f}"}
                if unconverged():
                    postfix["inner_at_maxiter"] = unconverged()
                bar.set_postfix(postfix, refresh=False)
                if checkpoint is not None and steps % checkpoint_every == 0:
                    checkpoint(*as_set(variables), list(losses))
                if not state.error > config.outer_tol:
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

    # The result.
    not_converged = unconverged()
    if not_converged:
        warn_inner_not_converged(config, not_converged, inner_errors)
    final_images, final_labels, final_l2reg = as_set(variables)
    return DistillResult(
        images=final_images, labels=final_labels, l2reg=final_l2reg,
        loss_history=losses, l2reg_history=l2regs, inner_errors=inner_errors,
        inner_not_converged=not_converged, inner_params=jax.device_get(state.aux[0]),
        steps=steps, stop_reason=stop_reason, seconds=time.perf_counter() - start,
        compile_seconds=_compile_seconds[0] - compile_seconds_before, config=config,
        data_split=data_split)


def _checked_training_data(train_images, train_labels, num_classes):
    """The training data as float32 and int32 NumPy arrays, after the checks ``distill`` documents."""
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
    # The run computes in float32, as the distilled set it returns, even where
    # 64-bit mode is on and the data are float64 (mixed, the inner solver's
    # implicit differentiation would meet two dtypes).
    return np.asarray(train_images, np.float32), np.asarray(train_labels, np.int32)


def _checked_init_images(init_images, shape):
    init_images = checks.images(init_images, "init_images")
    if init_images.shape != shape:
        raise ValueError(f"init_images must have shape {shape}, got {init_images.shape}")
    return jnp.asarray(init_images, dtype=jnp.float32)


def _initial_learned_values(config, init_l2reg, init_labels, label_shape) -> dict:
    """The learned variables that ``init_l2reg`` and ``init_labels`` replace."""
    replaced = {}
    if init_l2reg is not None:
        init_l2reg = checks.positive_number(init_l2reg, "init_l2reg")
        if config.learn_l2reg:
            replaced["log_l2reg"] = jnp.log(jnp.float32(init_l2reg))
        elif not np.isclose(init_l2reg, config.l2reg, rtol=1e-6, atol=0):
            raise ValueError(f"init_l2reg={init_l2reg:g} differs from config.l2reg="
                             f"{config.l2reg:g}, which this run keeps fixed: set "
                             "learn_l2reg=True to start from it, or l2reg to use it")
    if init_labels is not None:
        if not config.learn_labels:
            raise ValueError("init_labels are soft labels to start learning from: set "
                             "learn_labels=True (fixed labels are 0..num_classes-1 in order)")
        init_labels = checks.labels(np.asarray(init_labels, np.float32), "init_labels",
                                    num_classes=label_shape[1])
        if init_labels.shape != label_shape:
            raise ValueError(f"init_labels must be soft labels of shape {label_shape}, "
                             f"got {init_labels.shape}")
        replaced["label_logits"] = jnp.log(jnp.clip(jnp.asarray(init_labels), 1e-12, 1.0))
    return replaced


def warn_inner_not_converged(config: DistillConfig, count: int, inner_errors) -> None:
    """Warn that ``count`` inner solves stopped at ``config.inner_maxiter`` before ``inner_tol``.

    What :func:`distill` says at the end of such a run (and
    :func:`distill.cache.distilled` again when it reads one back).

    Args:
      config: the run's configuration.
      count: how many inner solves stopped at their iteration limit.
      inner_errors: the inner solver's stopping quantity at every solve.

    Returns:
      None; it issues a ``RuntimeWarning`` attributed to the caller's caller.
    """
    largest = max(inner_errors, key=lambda error: np.inf if np.isnan(error) else error)
    remedy = ("inner_maxiter, or use inner_solver='lbfgs'"
              if config.inner_solver == "gradient_descent"
              else "inner_maxiter, or inner_tol if float32 cannot reach it")
    warnings.warn(
        f"the inner solver stopped at maxiter={config.inner_maxiter} before reaching "
        f"tol={config.inner_tol} at {count} of {len(inner_errors)} iterates (largest error "
        f"reached {largest:.3g}); the hypergradients there are not those of the true inner "
        f"solution: raise {remedy}", RuntimeWarning, stacklevel=3)
