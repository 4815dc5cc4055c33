"""Evaluation: how well does a model trained on a small set do on real test data?"""

from __future__ import annotations

import numpy as np

from distill import model
from distill.data import Split


def test_accuracy(train_images, train_labels, l2reg: float, test: Split, **fit_options) -> float:
    """Train logistic regression on ``(train_images, train_labels)``; its test accuracy.

    The model is trained to high precision with L-BFGS, independently of the
    solver used during distillation, so the number measures the training set,
    not the optimizer.
    """
    W, _ = model.fit_logistic_regression(train_images, train_labels, l2reg, **fit_options)
    return model.accuracy(W, test.images, test.labels)


def random_real_subset(split: Split, images_per_class: int, seed: int, num_classes: int = 10):
    """``images_per_class`` real images of each class, drawn without replacement.

    Returns ``(images, labels)`` ordered by class, like a distilled set.
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
