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
import numbers
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from distill import model
from distill.model import jaxopt


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything that defines one distillation run.

    The defaults are the original JAXopt notebook's configuration.
    """

    dataset: str = "mnist"
    images_per_class: int = 1
    steps: int = 50            # outer iterations at most (the outer maxiter)
    seed: int = 0              # PRNG seed of the initial distilled images
    l2reg: float = 0.1         # inner L2 regularization
    inner_tol: float = 1e-3
    inner_maxiter: int = 500
    outer_tol: float = 1e-3

    def __post_init__(self):
        for name in ("images_per_class", "steps", "inner_maxiter"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("l2reg", "inner_tol", "outer_tol"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")


#: Named configurations. ``seed`` is the original notebook, exactly.
PRESETS = {"seed": DistillConfig()}


@dataclasses.dataclass
class DistillResult:
    images: np.ndarray           # (k, num_features) float32, learned
    labels: np.ndarray           # (k,) int32, fixed
    l2reg: float
    loss_history: list[float]    # outer loss before step 1, then after each step
    inner_errors: list[float]    # inner stopping quantity (state.error) at each iterate
    inner_not_converged: int     # iterates whose inner solve stopped at maxiter
    steps: int                   # outer steps taken
    seconds: float               # wall time of the loop, compilation included
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

    ``inner_solver_options`` go to :func:`distill.model.make_inner_solver`,
    e.g. ``implicit_diff=False`` to differentiate by unrolling the inner
    iterations, or ``implicit_diff_solve=...`` to choose the linear solver.
    """
    inner_solver = model.make_inner_solver(tol=config.inner_tol, maxiter=config.inner_maxiter,
                                           **inner_solver_options)
    inner_init = model.init_inner_params(num_features, num_classes)

    def outer_loss_and_inner(distilled_images, train_images, train_labels):
        inner = inner_solver.run(inner_init.astype(distilled_images.dtype), config.l2reg,
                                 (distilled_images, distilled_labels))
        return model.data_loss(inner.params, train_images, train_labels), inner

    def outer_loss(distilled_images, train_images, train_labels):
        return outer_loss_and_inner(distilled_images, train_images, train_labels)[0]

    return outer_loss, outer_loss_and_inner


def distill(train_images, train_labels, config: DistillConfig = DistillConfig(), *,
            init_images=None, num_classes: int = 10, progress: bool = True,
            callback=None) -> DistillResult:
    """Learn ``config.images_per_class`` images per class for ``(train_images, train_labels)``.

    The outer solver is JAXopt's ``GradientDescent`` (as in the original
    notebook), stepped one iteration at a time so that the loop can show
    progress and record the outer loss. It stops, like ``solver.run``, after
    ``config.steps`` iterations or when the norm of its step falls below
    ``config.outer_tol``.

    ``callback(step, images, inner_params)``, if given, is called with the
    initial images (step 0) and after every outer step, with the inner
    solution ``W*`` trained on those images: use it to follow, say, the test
    accuracy along the way.
    """
    start = time.perf_counter()
    train_images = jnp.asarray(train_images)
    train_labels = jnp.asarray(train_labels)
    num_features = train_images.shape[1]
    images, labels = initial_distilled_set(config, num_classes, num_features)
    if init_images is not None:
        images = jnp.asarray(init_images, dtype=jnp.float32)
        if images.shape != (len(labels), num_features):
            raise ValueError(f"init_images must have shape {(len(labels), num_features)}, "
                             f"got {images.shape}")

    outer_loss, outer_loss_and_inner = make_outer_loss(config, labels, num_features,
                                                       num_classes)
    outer_solver = jaxopt.GradientDescent(fun=outer_loss, tol=config.outer_tol,
                                          maxiter=config.steps)
    update = jax.jit(outer_solver.update)
    evaluate = jax.jit(outer_loss_and_inner)

    def record(distilled_images):
        loss, inner = evaluate(distilled_images, train_images, train_labels)
        loss, inner_error = float(loss), float(inner.state.error)
        if not np.isfinite(loss):
            raise FloatingPointError(f"the outer loss became {loss} after {len(losses) - 1} steps")
        losses.append(loss)
        inner_errors.append(inner_error)
        if callback is not None:
            callback(len(losses) - 1, distilled_images, inner.params)
        return loss

    losses: list[float] = []
    inner_errors: list[float] = []
    record(images)
    state = outer_solver.init_state(images, train_images, train_labels)
    with tqdm(total=config.steps, desc="outer steps", disable=not progress,
              mininterval=2.0) as bar:
        # Same stopping rule as jaxopt's run(): one step, then while error > tol.
        while True:
            images, state = update(images, state, train_images, train_labels)
            loss = record(images)
            bar.update(1)
            bar.set_postfix(outer_loss=f"{loss:.4f}", refresh=False)
            if int(state.iter_num) >= config.steps or not float(state.error) > config.outer_tol:
                break

    not_converged = sum(error > config.inner_tol for error in inner_errors)
    if not_converged:
        warnings.warn(
            f"the inner solver stopped at maxiter={config.inner_maxiter} before reaching "
            f"tol={config.inner_tol} at {not_converged} of {len(inner_errors)} iterates "
            f"(largest gradient norm {max(inner_errors):.3g}); the hypergradients there are "
            "not those of the true inner solution", RuntimeWarning, stacklevel=2)
    return DistillResult(
        images=np.asarray(images, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int32),
        l2reg=config.l2reg,
        loss_history=losses,
        inner_errors=inner_errors,
        inner_not_converged=not_converged,
        steps=int(state.iter_num),
        seconds=time.perf_counter() - start,
        config=config,
    )
