"""Transfer: train a model the images were *not* distilled for.

A distilled set is optimized for one learner, logistic regression. Whether it
also teaches another learner is an empirical question; this module trains a
small multilayer perceptron (one hidden ReLU layer) on any training set with
optax's AdamW, so that the chapter can compare distilled, random real and
full training sets on the same footing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import cache
from distill.data import Split


def init_mlp(key, num_features: int = 784, hidden: int = 128, num_classes: int = 10) -> dict:
    """He-initialized weights of ``x -> relu(x @ W1 + b1) @ W2 + b2``.

    Args:
      key: a JAX PRNG key.
      num_features: pixels per image.
      hidden: width of the hidden layer.
      num_classes: number of classes.

    Returns:
      ``{"W1": (num_features, hidden), "b1": (hidden,), "W2": (hidden,
      num_classes), "b2": (num_classes,)}``; the weights are normal with
      variance ``2 / fan_in``, the biases zero.

    Raises:
      ValueError: when ``hidden`` is below 1.
    """
    if hidden < 1:
        raise ValueError(f"hidden must be a positive integer, got {hidden}")
    key1, key2 = jax.random.split(key)
    return {
        "W1": jax.random.normal(key1, (num_features, hidden)) * jnp.sqrt(2.0 / num_features),
        "b1": jnp.zeros(hidden),
        "W2": jax.random.normal(key2, (hidden, num_classes)) * jnp.sqrt(2.0 / hidden),
        "b2": jnp.zeros(num_classes),
    }


def mlp_logits(params: dict, images) -> jax.Array:
    """The MLP's class scores ``relu(images @ W1 + b1) @ W2 + b2``.

    Args:
      params: the weights, as :func:`init_mlp` lays them out.
      images: (n, num_features) images.

    Returns:
      (n, num_classes) logits.
    """
    hidden = jax.nn.relu(images @ params["W1"] + params["b1"])
    return hidden @ params["W2"] + params["b2"]


def _cross_entropy(params, images, targets):
    # ``targets`` are (n, num_classes) probabilities: one-hot or soft labels.
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(mlp_logits(params, images)), axis=1))


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "hidden", "learning_rate",
                                             "weight_decay"))
def _train(key, images, targets, *, steps, batch_size, hidden, learning_rate, weight_decay):
    init_key, batch_key = jax.random.split(key)
    params = init_mlp(init_key, images.shape[1], hidden, targets.shape[1])
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def step(carry, step_key):
        params, state = carry
        if batch_size < images.shape[0]:
            # Drawn with replacement: a permutation of 60,000 rows per step would
            # cost more than the step itself.
            rows = jax.random.randint(step_key, (batch_size,), 0, images.shape[0])
            batch = images[rows], targets[rows]
        else:
            batch = images, targets
        loss, grads = jax.value_and_grad(_cross_entropy)(params, *batch)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                       jax.random.split(batch_key, steps))
    return params, losses


def train_mlp(images, labels, *, num_classes: int = 10, hidden: int = 128, steps: int = 500,
              batch_size: int | None = None, learning_rate: float = 1e-3,
              weight_decay: float = 1e-4, seed: int = 0):
    """Train the MLP on ``(images, labels)`` with AdamW, from a fresh initialization.

    The whole loop is one compiled ``jax.lax.scan``, compiled once per shape
    and setting.

    Args:
      images: (n, num_features) images (cast to float32).
      labels: (n,) integer classes or ``(n, num_classes)`` soft labels.
      num_classes: number of classes, for integer labels.
      hidden: width of the hidden layer.
      steps: AdamW steps.
      batch_size: None uses every image at every step (right for a small
        distilled set); a batch size draws a fresh random batch, with
        replacement, at each step (capped at ``n``).
      learning_rate: AdamW's step size.
      weight_decay: AdamW's weight decay.
      seed: seeds the initialization and the batches.

    Returns:
      ``(params, losses)``: the trained weights (as :func:`init_mlp`) and the
      (steps,) training losses, one per step (NumPy, float32).

    Raises:
      ValueError: when ``images`` is not 2-D, ``labels`` is neither 1-D nor
        2-D or has another count, or ``steps`` is below 1.
      FloatingPointError: if the training loss becomes NaN or infinite.
    """
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels)
    if images.ndim != 2:
        raise ValueError(f"images must have shape (n, features), got {images.shape}")
    if labels.ndim == 1:
        targets = jax.nn.one_hot(labels, num_classes)
    elif labels.ndim == 2:
        targets = labels.astype(jnp.float32)
    else:
        raise ValueError(f"labels must be classes (n,) or soft labels (n, classes), "
                         f"got shape {labels.shape}")
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} labels")
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    batch_size = images.shape[0] if batch_size is None else min(int(batch_size), images.shape[0])
    params, losses = _train(jax.random.PRNGKey(seed), images, targets, steps=int(steps),
                            batch_size=batch_size, hidden=int(hidden),
                            learning_rate=float(learning_rate), weight_decay=float(weight_decay))
    losses = np.asarray(losses)
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"the MLP's training loss became {losses[~np.isfinite(losses)][0]}"
                                 f" at step {int(np.argmin(np.isfinite(losses))) + 1}")
    return params, losses


def mlp_accuracy(params: dict, images, labels) -> float:
    """Fraction of ``images`` whose predicted class (largest logit) equals ``labels``.

    Args:
      params: the MLP's weights.
      images: (n, num_features) images.
      labels: (n,) integer classes.

    Returns:
      The accuracy in [0, 1], a Python float.
    """
    predicted = jnp.argmax(mlp_logits(params, jnp.asarray(images)), axis=1)
    return float(jnp.mean(predicted == jnp.asarray(labels)))


def mlp_test_accuracies(images, labels, test: Split, seeds, *, use_cache: bool = True,
                        **options) -> np.ndarray:
    """Test accuracy of the MLP trained on ``(images, labels)``, one entry per seed.

    The seed sets the MLP's initialization (and its batches). Cached on disk
    like the other baselines (see :mod:`distill.cache`), since training on a
    full dataset takes a while.

    Args:
      images: (n, num_features) training images.
      labels: (n,) integer classes or (n, num_classes) soft labels.
      test: the real test :class:`~distill.data.Split`.
      seeds: an iterable of integer seeds, one trained MLP each.
      use_cache: read and write the on-disk cache.
      **options: passed to :func:`train_mlp` (``hidden``, ``steps``,
        ``batch_size``, ...); part of the cache key.

    Returns:
      (len(seeds),) test accuracies in [0, 1], in the order of ``seeds``.

    Raises:
      ValueError, FloatingPointError: as :func:`train_mlp`.
    """
    seeds = [int(seed) for seed in seeds]

    def compute():
        return {"accuracies": np.array([
            mlp_accuracy(train_mlp(images, labels, seed=seed, **options)[0],
                         test.images, test.labels)
            for seed in seeds])}

    key = {"train": [cache.fingerprint(np.asarray(images)), cache.fingerprint(np.asarray(labels))],
           "test": [cache.fingerprint(test.images), cache.fingerprint(test.labels)],
           "seeds": seeds, "options": {name: options[name] for name in sorted(options)}}
    return cache.cached("mlp", key, compute, enabled=use_cache)["accuracies"]
