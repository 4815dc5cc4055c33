"""The inner model and its solver: L2-regularized multiclass logistic regression.

The model maps a flat image ``x`` (784 pixels) to 10 class scores ``x @ W``
with a weight matrix ``W`` of shape (784, 10) and no intercept. Trained on
images ``X`` (k, 784) with labels ``y``, it minimizes

    L(W; X, y, l2reg) = mean_i  CE(y_i, softmax(X_i @ W))  +  l2reg / 2 * ||W||^2

which is ``jaxopt.objective.l2_multiclass_logreg(W, l2reg, (X, y))``, written
here in JAX with the same operations, so that the helper needs JAXopt only
for JAXopt's solvers (:mod:`distill.implicit`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from distill import checks, implicit
from distill.config import INNER_SOLVERS  # noqa: F401  (the names make_inner_solver takes)


def __getattr__(name):
    # ``distill.model.jaxopt``: JAXopt, imported on first use without its
    # archival warning (chapters that teach JAXopt's own API import it so).
    if name == "jaxopt":
        return implicit.import_jaxopt()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _logistic_loss(label, logits):
    # JAXopt's multiclass_logistic_loss: logsumexp(logits) - logits[label],
    # with the label's score subtracted inside, against rounding.
    logits = (logits - logits[label]).at[label].set(0.0)
    return jax.scipy.special.logsumexp(logits)


_logistic_losses = jax.vmap(_logistic_loss)


def inner_objective(W, l2reg, data):
    """The inner objective, as JAXopt defines it: (W, l2reg, (X, y)) -> loss.

    ``mean_i CE(y_i, softmax(X_i @ W)) + l2reg / 2 * ||W||^2``, computed as
    ``jaxopt.objective.l2_multiclass_logreg`` computes it, bit for bit.

    Args:
      W: (num_features, num_classes) weights.
      l2reg: scalar L2 strength.
      data: ``(images, labels)``: (k, num_features) images and (k,) integer classes.

    Returns:
      The scalar loss.
    """
    images, labels = data
    return jnp.mean(_logistic_losses(labels, jnp.dot(images, W))) + 0.5 * l2reg * jnp.sum(W**2)


def softlabel_objective(W, l2reg, data):
    """The inner objective for soft targets: mean cross-entropy plus the L2 penalty.

    ``-mean_i sum_c Y_ic log softmax(X_i @ W)_c + l2reg / 2 * ||W||^2``, which
    equals :data:`inner_objective` when the rows of ``Y`` are one-hot.

    Args:
      W: (num_features, num_classes) weights.
      l2reg: scalar L2 strength.
      data: ``(images, targets)``: (k, num_features) images and
        (k, num_classes) target probabilities.

    Returns:
      The scalar loss.
    """
    images, targets = data
    log_probs = jax.nn.log_softmax(images @ W)
    return -jnp.mean(jnp.sum(targets * log_probs, axis=1)) + 0.5 * l2reg * jnp.sum(W**2)


def logistic_objective(W, l2reg, data):
    """The inner objective for hard or soft labels, chosen by the labels' shape.

    Args:
      W: (num_features, num_classes) weights.
      l2reg: scalar L2 strength.
      data: ``(images, labels)``: (k, num_features) images, and (k,) integer
        classes or (k, num_classes) soft targets.

    Returns:
      The scalar loss: :func:`softlabel_objective` for 2-D labels,
      :data:`inner_objective` otherwise.
    """
    _, labels = data
    if jnp.ndim(labels) == 2:
        return softlabel_objective(W, l2reg, data)
    return inner_objective(W, l2reg, data)


@jax.custom_vjp
def scores(images, W):
    """``images @ W``, with a backward pass laid out for a tall ``images``.

    The gradient with respect to ``W`` is ``images.T @ g``. For the 60,000 x
    784 training set, inside the gradient of the loss, XLA on CPU lays that
    product out more slowly than ``g.T @ images``, its transpose (the two
    products alone, compiled on their own, take the same time), and the
    pass over the training set is most of every outer step, so this backward
    pass computes the latter and transposes the small result. The values are
    the same; chapter 5 times the loss and its gradient both ways.

    Args:
      images: (n, num_features) images.
      W: (num_features, num_classes) weights.

    Returns:
      (n, num_classes) class scores (logits).
    """
    return images @ W


def _scores_forward(images, W):
    return images @ W, (images, W)


def _scores_backward(residuals, g):
    images, W = residuals
    # The barrier keeps XLA from folding the transpose back into the product.
    return g @ W.T, jax.lax.optimization_barrier(g.T @ images).T


scores.defvjp(_scores_forward, _scores_backward)


def data_loss(W, images, labels, weights=None):
    """The unregularized mean cross-entropy of ``W`` on ``(images, labels)``.

    The same as ``logistic_objective(W, 0.0, (images, labels))``, computed
    through :func:`scores` for a faster gradient on large data. With
    ``weights``, the weighted mean ``sum_i w_i CE_i / sum_i w_i``: the data
    padded by :func:`distill.sharding.shard_examples` mark their padding
    with weight zero.

    Args:
      W: (num_features, num_classes) weights.
      images: (n, num_features) images.
      labels: (n,) integer classes or (n, num_classes) soft targets.
      weights: (n,) non-negative weights of the examples, or None (all equal).

    Returns:
      The scalar loss (a JAX array; the outer loss when ``W`` is the inner
      solution and the data are the real training set).
    """
    logits = scores(images, W)
    log_probs = jax.nn.log_softmax(logits)
    if jnp.ndim(labels) == 2:
        log_likelihoods = jnp.sum(labels * log_probs, axis=1)
    else:
        log_likelihoods = jnp.take_along_axis(log_probs, jnp.asarray(labels)[:, None],
                                              axis=1)[:, 0]
    if weights is None:
        return -jnp.mean(log_likelihoods)
    return -jnp.sum(weights * log_likelihoods) / jnp.sum(weights)


def hessian_vector_product(W, l2reg, data, objective=inner_objective):
    """``v -> H v``, with ``H`` the Hessian of ``objective(., l2reg, data)`` at ``W``.

    Computed without forming ``H``: the forward-mode derivative of the
    gradient along ``v`` (the chapter "Implicit differentiation" derives it).
    Implicit differentiation solves ``H v = b`` with such products.

    Args:
      W: (num_features, num_classes) point where the Hessian is taken.
      l2reg: scalar L2 strength.
      data: ``(images, labels)`` as ``objective`` takes them.
      objective: ``objective(W, l2reg, data) -> loss``; by default
        :data:`inner_objective` (integer labels).

    Returns:
      ``product(v)``: maps a direction ``v`` of ``W``'s shape to ``H v``, of
      the same shape.
    """
    def gradient(W):
        return jax.grad(objective)(W, l2reg, data)

    def product(direction):
        return jax.jvp(gradient, (W,), (direction,))[1]

    return product


def init_inner_params(num_features: int = 784, num_classes: int = 10) -> jax.Array:
    """The original notebook's starting point for the inner solver: all ones.

    Args:
      num_features: pixels per image.
      num_classes: number of classes.

    Returns:
      (num_features, num_classes) float32 array of ones.
    """
    return jnp.ones((num_features, num_classes))


def make_inner_solver(tol: float = 1e-3, maxiter: int = 500, *, objective=inner_objective,
                      method: str = "gradient_descent", backend: str = "jaxopt", **options):
    """The inner solver: by default the original notebook's.

    ``GradientDescent`` (accelerated, with backtracking line search) stops
    when the gradient norm falls below ``tol`` or after ``maxiter`` steps. It
    is differentiable by implicit differentiation (``implicit_diff=True`` is
    JAXopt's default): ``jax.grad`` through ``solver.run`` solves a linear
    system at the solution instead of backpropagating through the iterations,
    with respect to every input of ``run``: the images, and also ``l2reg`` and
    the labels when they are learned (pass ``objective=logistic_objective``
    for soft labels).

    ``method="lbfgs"`` uses ``jaxopt.LBFGS`` instead, with the same stopping
    rule and the same implicit differentiation. It needs far fewer iterations
    when ``l2reg`` is small and the problem is ill-conditioned, as it becomes
    when ``l2reg`` is learned. Its line search is backtracking: JAXopt's
    default (zoom) stalls in float32 just above a gradient norm of 1e-6 on
    such problems, and the solver then runs to ``maxiter``.

    ``backend="jax"`` solves with Optax instead (its L-BFGS, or steepest
    descent, each with a backtracking line search) and differentiates with
    ``jax.lax.custom_root``: the same hypergradient without JAXopt
    (:class:`distill.implicit.CoreJaxSolver`).

    Args:
      tol: stop when the gradient norm falls below this.
      maxiter: ... or after this many iterations.
      objective: ``objective(W, l2reg, data) -> loss``; by default
        :data:`inner_objective` (integer labels).
      method: ``"gradient_descent"`` or ``"lbfgs"``.
      backend: ``"jaxopt"`` or ``"jax"`` (:data:`distill.config.IMPLICIT_DIFF_BACKENDS`).
      **options: ``implicit_diff_solve`` (the linear solver of implicit
        differentiation, ``solve(matvec, b)``); for JAXopt, also its solver's
        options, e.g. ``implicit_diff=False`` (differentiate by unrolling).

    Returns:
      A ``jaxopt.GradientDescent`` or ``jaxopt.LBFGS``, or a
      :class:`distill.implicit.CoreJaxSolver`; call it as
      ``solver.run(init_params, l2reg, (images, labels))``. Its result has
      ``params`` and ``state.error`` (the gradient norm) and ``state.iter_num``.

    Raises:
      ValueError: when ``method`` is not one of :data:`INNER_SOLVERS`, or
        ``backend`` not a backend.
      ImportError: for ``backend="jaxopt"`` without JAXopt installed.
    """
    return implicit.make_solver(objective, tol=tol, maxiter=maxiter, method=method,
                                backend=backend, **options)


@functools.partial(jax.jit, static_argnames=("tol", "maxiter", "backend"))
def _lbfgs_fit(init_params, l2reg, images, labels, *, tol, maxiter, backend):
    # Compiled once per shape and (tol, maxiter, backend), then reused for
    # every l2reg and every set of images of that shape.
    # JAXopt's LBFGS with its own default line search (zoom), as before the
    # backends: the inner solvers' backtracking suits warm-started float32
    # solves, not these fits from zeros to a tight tolerance.
    options = {"linesearch": "zoom"} if backend == "jaxopt" else {}
    solver = implicit.make_solver(logistic_objective, tol=tol, maxiter=maxiter, method="lbfgs",
                                  backend=backend, **options)
    W = solver.run(init_params, l2reg, (images, labels)).params
    return W, jnp.linalg.norm(jax.grad(logistic_objective)(W, l2reg, (images, labels)))


def fit_logistic_regression(images, labels, l2reg: float, *, num_classes: int = 10,
                            tol: float = 1e-5, maxiter: int = 2000, init_params=None,
                            backend: str | None = None):
    """Train the model to high precision, for evaluation (not differentiated).

    L-BFGS (JAXopt's, or Optax's with ``backend="jax"``; compiled once per
    shape and ``(tol, maxiter)``) from zeros, independent of the inner solver
    used in distillation. Nothing is differentiated here, and both reach
    ``tol``, so by default it uses JAXopt's when JAXopt is installed and
    Optax's otherwise.

    Args:
      images: (n, num_features) finite floating-point images.
      labels: (n,) integer classes, or (n, num_classes) soft labels (which
        then set the number of classes).
      l2reg: positive finite L2 strength.
      num_classes: number of classes, for integer labels.
      tol: the gradient norm the solution must reach.
      maxiter: iterations at most.
      init_params: (num_features, num_classes) starting point; zeros when None.
      backend: whose L-BFGS: ``"jaxopt"`` or ``"jax"``; None: JAXopt's when
        it is installed, else Optax's.

    Returns:
      ``(W, gradient_norm)``: the (num_features, num_classes) weights (a JAX
      array) and the norm of the objective's gradient there (a float).

    Raises:
      ValueError: naming the argument for images that are not a finite float
        (n, pixels) array, labels out of range or not one per image, an
        ``l2reg`` that is not a positive finite number, or an unknown backend.
      RuntimeError: when the solver stops at ``maxiter`` with a gradient norm
        above ``tol``.
    """
    if np.ndim(labels) == 2:
        num_classes = np.shape(labels)[1]
    checks.images(images, "images")
    checks.labels(labels, "labels", num_classes=num_classes, count=len(images))
    l2reg = checks.positive_number(l2reg, "l2reg")
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    if init_params is None:
        init_params = jnp.zeros((images.shape[1], num_classes), images.dtype)
    if backend is None:
        backend = "jaxopt" if implicit.jaxopt_installed() else "jax"
    W, gradient_norm = _lbfgs_fit(init_params, l2reg, images, labels, tol=tol, maxiter=maxiter,
                                  backend=backend)
    gradient_norm = float(gradient_norm)
    if not gradient_norm <= tol:
        raise RuntimeError(f"L-BFGS did not converge in {maxiter} iterations: gradient norm "
                           f"{gradient_norm:.3g} > tol={tol}")
    return W, gradient_norm


def predict(W, images) -> jax.Array:
    """The predicted classes: the largest score of ``images @ W``.

    Args:
      W: (num_features, num_classes) weights.
      images: (n, num_features) images.

    Returns:
      (n,) integer classes.
    """
    return jnp.argmax(jnp.asarray(images) @ W, axis=1)


def accuracy(W, images, labels) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``.

    Args:
      W: (num_features, num_classes) weights.
      images: (n, num_features) images.
      labels: (n,) integer classes.

    Returns:
      The accuracy in [0, 1], a Python float.
    """
    return float(jnp.mean(predict(W, images) == jnp.asarray(labels)))
