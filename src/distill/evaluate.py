"""Evaluation: how well does a model trained on a small set do on real test data?"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from distill import cache, model
from distill.data import Split


def test_accuracy(train_images, train_labels, l2reg: float, test: Split, **fit_options) -> float:
    """Train logistic regression on ``(train_images, train_labels)``; its test accuracy.

    The model is trained to high precision with L-BFGS, independently of the
    solver used during distillation, so the number measures the training set,
    not the optimizer.

    Args:
      train_images: (k, num_features) floating-point images.
      train_labels: (k,) integer classes or (k, num_classes) soft labels.
      l2reg: positive L2 strength to train with.
      test: the real test :class:`~distill.data.Split`.
      **fit_options: passed to :func:`distill.model.fit_logistic_regression`
        (``num_classes``, ``tol``, ``maxiter``, ``init_params``).

    Returns:
      The test accuracy in [0, 1], a Python float.

    Raises:
      ValueError, RuntimeError: as :func:`distill.model.fit_logistic_regression`
        (bad input; no convergence).
    """
    W, _ = model.fit_logistic_regression(train_images, train_labels, l2reg, **fit_options)
    return model.accuracy(W, test.images, test.labels)


class FollowTestAccuracy:
    """A ``distill(callback=...)`` that records how the trained model evolves.

    After the initial images and every outer step, ``distill`` passes the
    inner solution ``W*``; this records its test accuracy on ``test`` in
    ``accuracies`` and its norm ``||W*||`` in ``weight_norms``.

    Args:
      test: the real test :class:`~distill.data.Split` (moved to the device
        once).

    Attributes:
      test_images: (n, num_features) test images, a JAX array.
      test_labels: (n,) test labels, a JAX array.
      accuracies: one test accuracy per call, in [0, 1].
      weight_norms: one Frobenius norm ``||W*||`` per call.
    """

    def __init__(self, test: Split):
        # On the device once, not at every step.
        self.test_images = jnp.asarray(test.images)
        self.test_labels = jnp.asarray(test.labels)
        self.accuracies: list[float] = []
        self.weight_norms: list[float] = []

    def __call__(self, step, images, inner_params):
        self.accuracies.append(model.accuracy(inner_params, self.test_images, self.test_labels))
        self.weight_norms.append(float(jnp.linalg.norm(inner_params)))


def random_real_subset(split: Split, images_per_class: int, seed: int, num_classes: int = 10):
    """``images_per_class`` real images of each class, drawn without replacement.

    Args:
      split: the :class:`~distill.data.Split` to draw from.
      images_per_class: images of each class, at least 1.
      seed: seed of NumPy's generator; the same seed draws the same images.
      num_classes: the classes ``0..num_classes-1`` to draw.

    Returns:
      ``(images, labels)`` ordered by class, like a distilled set:
      (num_classes * images_per_class, num_features) images and the matching
      (num_classes * images_per_class,) labels.

    Raises:
      ValueError: when ``images_per_class`` is below 1, or a class has fewer
        images than that.
    """
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be at least 1, got {images_per_class}")
    rng = np.random.default_rng(seed)
    indices = []
    for label in range(num_classes):
        candidates = np.flatnonzero(split.labels == label)
        if len(candidates) < images_per_class:
            raise ValueError(f"class {label} has {len(candidates)} images, fewer than "
                             f"images_per_class={images_per_class}")
        indices.append(rng.choice(candidates, size=images_per_class, replace=False))
    indices = np.concatenate(indices)
    return split.images[indices], split.labels[indices]


def random_subset_accuracies(train: Split, test: Split, images_per_class: int, l2reg: float,
                             seeds, num_classes: int = 10, *, use_cache: bool = True) -> np.ndarray:
    """Test accuracy of the model trained on a random real subset, one entry per seed.

    Cached on disk (see :mod:`distill.cache`): the chapters that compare
    against these baselines compute them once between them.

    Args:
      train: the :class:`~distill.data.Split` the subsets are drawn from.
      test: the :class:`~distill.data.Split` to measure accuracy on.
      images_per_class: images of each class in each subset.
      l2reg: positive L2 strength to train with.
      seeds: an iterable of integer seeds, one subset each
        (:func:`random_real_subset`).
      num_classes: number of classes.
      use_cache: read and write the on-disk cache.

    Returns:
      (len(seeds),) test accuracies in [0, 1], in the order of ``seeds``.

    Raises:
      ValueError, RuntimeError: as :func:`random_real_subset` and
        :func:`test_accuracy`.
    """
    seeds = [int(seed) for seed in seeds]

    def compute():
        return {"accuracies": np.array([
            test_accuracy(*random_real_subset(train, images_per_class, seed, num_classes),
                          l2reg, test)
            for seed in seeds
        ])}

    key = {"train": [cache.fingerprint(train.images), cache.fingerprint(train.labels)],
           "test": [cache.fingerprint(test.images), cache.fingerprint(test.labels)],
           "images_per_class": int(images_per_class), "l2reg": float(l2reg), "seeds": seeds,
           "num_classes": int(num_classes)}
    return cache.cached("random-subsets", key, compute, enabled=use_cache)["accuracies"]


def all_data_model(train: Split, l2reg: float = 1e-4, *, tol: float = 1e-4,
                   maxiter: int = 1000, use_cache: bool = True) -> np.ndarray:
    """Logistic regression trained on all of ``train``: the reference a distilled set aims at.

    About 16 s on two CPU cores for MNIST, so it is cached on disk (see
    :mod:`distill.cache`) and computed once for all chapters.

    Args:
      train: the full training :class:`~distill.data.Split`.
      l2reg: positive L2 strength to train with.
      tol: the gradient norm the solution must reach.
      maxiter: L-BFGS iterations at most.
      use_cache: read and write the on-disk cache.

    Returns:
      The (num_features, num_classes) weights ``W``, a NumPy array.

    Raises:
      RuntimeError: when L-BFGS does not reach ``tol`` in ``maxiter``
        iterations (:func:`distill.model.fit_logistic_regression`).
    """
    def compute():
        W, _ = model.fit_logistic_regression(train.images, train.labels, l2reg, tol=tol,
                                             maxiter=maxiter)
        return {"W": np.asarray(W)}

    key = {"train": [cache.fingerprint(train.images), cache.fingerprint(train.labels)],
           "l2reg": float(l2reg), "tol": float(tol), "maxiter": int(maxiter)}
    return cache.cached("all-data-model", key, compute, enabled=use_cache)["W"]


def exact_outer_loss(images, labels, l2reg: float, train: Split, *, tol: float = 1e-6) -> float:
    """The outer loss ``F`` of a distilled set, with its inner problem solved to ``tol``.

    Independent of the solver a run used, so that runs of different solvers
    are compared on the same footing.

    Args:
      images: (k, num_features) distilled images.
      labels: (k,) integer classes or (k, num_classes) soft labels.
      l2reg: positive L2 strength of the inner problem.
      train: the real training :class:`~distill.data.Split` the loss is
        measured on.
      tol: the inner gradient norm to reach.

    Returns:
      The unregularized mean cross-entropy on ``train`` of the model trained
      on the distilled set, a Python float.

    Raises:
      ValueError, RuntimeError: as :func:`distill.model.fit_logistic_regression`.
    """
    W, _ = model.fit_logistic_regression(images, labels, l2reg, tol=tol)
    return float(model.data_loss(W, train.images, train.labels))


def mean_and_spread(values) -> str:
    """``"88.1% ± 0.4%"``: the mean and the sample standard deviation of accuracies.

    A spread under 0.05 points gets a second decimal, so that it never reads 0.0%.

    Args:
      values: a non-empty 1-D sequence of accuracies in [0, 1].

    Returns:
      The formatted string; a single value is shown alone, without a spread.

    Raises:
      ValueError: when ``values`` is empty or not 1-D.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"expected a non-empty list of accuracies, got shape {values.shape}")
    if len(values) == 1:
        return f"{values[0]:.1%}"
    spread = values.std(ddof=1)
    digits = 2 if spread < 0.0005 else 1
    return f"{values.mean():.{digits}%} ± {spread:.{digits}%}"


def confusion_matrix(true_labels, predicted_labels, num_classes: int = 10) -> np.ndarray:
    """``counts[i, j]``: how many images of class ``i`` were predicted as class ``j``.

    Args:
      true_labels: (n,) integer classes.
      predicted_labels: (n,) integer classes.
      num_classes: number of classes.

    Returns:
      (num_classes, num_classes) int64 counts; row ``i`` sums to the number
      of images of class ``i``.

    Raises:
      ValueError: when the labels are not 1-D of the same length, or lie
        outside ``0..num_classes-1``.
    """
    true_labels = np.asarray(true_labels)
    predicted_labels = np.asarray(predicted_labels)
    if true_labels.shape != predicted_labels.shape or true_labels.ndim != 1:
        raise ValueError(f"true and predicted labels must be 1-D of the same length, got "
                         f"shapes {true_labels.shape} and {predicted_labels.shape}")
    for name, labels in (("true", true_labels), ("predicted", predicted_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}, got values "
                             f"{labels.min()}..{labels.max()}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (true_labels, predicted_labels), 1)
    return counts
