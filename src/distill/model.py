"""The inner model and its solver: L2-regularized multiclass logistic regression.

The model maps a flat image ``x`` (784 pixels) to 10 class scores ``x @ W``
with a weight matrix ``W`` of shape (784, 10) and no intercept. Trained on
images ``X`` (k, 784) with labels ``y``, it minimizes

    L(W; X, y, l2reg) = mean_i  CE(y_i, softmax(X_i @ W))  +  l2reg / 2 * ||W||^2

which is ``jaxopt.objective.l2_multiclass_logreg(W, l2reg, (X, y))``.
"""

from __future__ import annotations

import functools
import warnings

with warnings.catch_warnings():
    # JAXopt is archived upstream (0.8.5 is the last release) and says so on
    # import; the book explains this once, so the helper keeps it quiet.
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained")
    import jaxopt

import jax
import jax.numpy as jnp
import numpy as np

from distill import checks
from distill.config import INNER_SOLVERS  # noqa: F401  (the names make_inner_solver takes)

#: The inner objective, exactly as JAXopt defines it: (W, l2reg, (X, y)) -> loss.
inner_objective = jaxopt.objective.l2_multiclass_logreg


def softlabel_objective(W, l2reg, data):
    """The same objective for soft targets ``Y`` of shape (k, num_classes)."""
    images, targets = data
    log_probs = jax.nn.log_softmax(images @ W)
    return -jnp.mean(jnp.sum(targets * log_probs, axis=1)) + 0.5 * l2reg * jnp.sum(W**2)


def logistic_objective(W, l2reg, data):
    """Dispatch on the labels: integer classes or (k, num_classes) soft targets."""
    _, labels = data
    if jnp.ndim(labels) == 2:
        return softlabel_objective(W, l2reg, data)
    return inner_objective(W, l2reg, data)


@jax.custom_vjp
def scores(images, W):
    """``images @ W``, with a backward pass laid out for a tall ``images``.

    The gradient with respect to ``W`` is ``images.T @ g``. For the 60,000 x
    784 training set, XLA on CPU computes that product about twice as slowly
    as ``g.T @ images``, its transpose, and it is the largest computation of
    every outer step, so this backward pass computes the latter and transposes
    the small result. The values are the same.
    """
    return images @ W


def _scores_forward(images, W):
    return images @ W, (images, W)


def _scores_backward(residuals, g):
    images, W = residuals
    # The barrier keeps XLA from folding the transpose back into the product.
    return g @ W.T, jax.lax.optimization_barrier(g.T @ images).T


scores.defvjp(_scores_forward, _scores_backward)


def data_loss(W, images, labels):
    """The unregularized mean cross-entropy of ``W`` on ``(images, labels)``.

    The same as ``logistic_objective(W, 0.0, (images, labels))``, computed
    through :func:`scores` for a faster gradient on large data.
    """
    logits = scores(images, W)
    log_probs = jax.nn.log_softmax(logits)
    if jnp.ndim(labels) == 2:
        return -jnp.mean(jnp.sum(labels * log_probs, axis=1))
    return -jnp.mean(jnp.take_along_axis(log_probs, jnp.asarray(labels)[:, None], axis=1))


def hessian_vector_product(W, l2reg, data, objective=inner_objective):
    """``v -> H v``, with ``H`` the Hessian of ``objective(., l2reg, data)`` at ``W``.

    Computed without forming ``H``: the forward-mode derivative of the
    gradient along ``v`` (the chapter "Implicit differentiation" derives it).
    Implicit differentiation solves ``H v = b`` with such products.
    """
    def gradient(W):
        return jax.grad(objective)(W, l2reg, data)

    def product(direction):
        return jax.jvp(gradient, (W,), (direction,))[1]

    return product


def init_inner_params(num_features: int = 784, num_classes: int = 10) -> jax.Array:
    """The original notebook's starting point for the inner solver: all ones."""
    return jnp.ones((num_features, num_classes))


def make_inner_solver(tol: float = 1e-3, maxiter: int = 500, *, objective=inner_objective,
                      method: str = "gradient_descent", **options):
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
    """
    if method not in INNER_SOLVERS:
        raise ValueError(f"method must be one of {list(INNER_SOLVERS)}, got {method!r}")
    if method == "lbfgs":
        options.setdefault("linesearch", "backtracking")
        return jaxopt.LBFGS(fun=objective, tol=tol, maxiter=maxiter, **options)
    return jaxopt.GradientDescent(fun=objective, tol=tol, maxiter=maxiter, **options)


@functools.partial(jax.jit, static_argnames=("tol", "maxiter"))
def _lbfgs_fit(init_params, l2reg, images, labels, *, tol, maxiter):
    # Compiled once per shape and (tol, maxiter), then reused for every
    # l2reg and every set of images of that shape.
    solver = jaxopt.LBFGS(fun=logistic_objective, tol=tol, maxiter=maxiter)
    W = solver.run(init_params, l2reg, (images, labels)).params
    return W, jnp.linalg.norm(jax.grad(logistic_objective)(W, l2reg, (images, labels)))


def fit_logistic_regression(images, labels, l2reg: float, *, num_classes: int = 10,
                            tol: float = 1e-5, maxiter: int = 2000, init_params=None):
    """Train the model to high precision, for evaluation (not differentiated).

    L-BFGS from zeros, independent of the inner solver used in distillation.
    Returns ``(W, gradient_norm)``; raises ``RuntimeError`` if the solver
    stops at ``maxiter`` with a gradient norm above ``tol``, and
    ``ValueError`` naming the argument for images that are not a finite float
    (n, pixels) array, labels out of range or not one per image, or an
    ``l2reg`` that is not a positive finite number.
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
    W, gradient_norm = _lbfgs_fit(init_params, l2reg, images, labels, tol=tol, maxiter=maxiter)
    gradient_norm = float(gradient_norm)
    if not gradient_norm <= tol:
        raise RuntimeError(f"L-BFGS did not converge in {maxiter} iterations: gradient norm "
                           f"{gradient_norm:.3g} > tol={tol}")
    return W, gradient_norm


def predict(W, images) -> jax.Array:
    return jnp.argmax(jnp.asarray(images) @ W, axis=1)


def accuracy(W, images, labels) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``."""
    return float(jnp.mean(predict(W, images) == jnp.asarray(labels)))
