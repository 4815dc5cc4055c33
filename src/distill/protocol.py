"""The field's evaluation protocol: a ConvNet trained from scratch on the set alone.

A distilled set is scored, in every paper the book compares with, by training
the benchmarks' ConvNet (:mod:`distill.convnet`) from a fresh initialization
on the set and nothing else, then testing it on the real test split:

- SGD with momentum 0.9 and weight decay 5e-4 (on every weight), batches of
  256 reshuffled every epoch, 300 epochs;
- learning rate 0.01, divided by 10 after half the epochs (the optimizer,
  momentum included, starts afresh then, as in DC's code; DC's code runs
  301 epochs, 152 before the division and 149 after, where this runs 150
  and 150);
- the images standardized with the real training set's pixel mean and
  standard deviation, then, optionally, augmented
  (:func:`distill.augment.dc_augment`) at every batch;
- cross-entropy against the labels: classes, or rows of probabilities for
  learned soft labels;
- several initializations, reported as mean and standard deviation.

:class:`Protocol` holds the settings (the defaults are the published ones);
:func:`test_accuracies` runs them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from distill import augment, cache, checks, convnet
from distill.data import Dataset


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Settings of the evaluation protocol.

    Attributes:
      epochs: passes over the set (300 in the papers).
      batch_size: images per SGD step (256).
      learning_rate: SGD's step size for the first half of the epochs (0.01).
      momentum: SGD's momentum (0.9).
      weight_decay: L2 weight decay added to every gradient (5e-4).
      augment: augment every batch with DC's crop, scale or rotation.
      width: channels of the ConvNet (128).
      depth: convolution blocks of the ConvNet (3).
    """

    epochs: int = 300
    batch_size: int = 256
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    width: int = 128
    depth: int = 3

    def __post_init__(self):
        for name in ("epochs", "batch_size", "width", "depth"):
            checks.positive_int(getattr(self, name), name)
        checks.positive_number(self.learning_rate, "learning_rate")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def standardization(dataset: Dataset) -> tuple[float, float]:
    """The real training images' pixel mean and standard deviation.

    Args:
      dataset: the real dataset (its ``train`` split is read).

    Returns:
      ``(mean, std)`` as Python floats (about 0.131 and 0.308 on MNIST).
    """
    images = dataset.train.images
    return float(np.mean(images, dtype=np.float64)), float(np.std(images, dtype=np.float64))


def _targets(labels, count: int, num_classes: int) -> jax.Array:
    labels = checks.labels(labels, num_classes=num_classes, count=count)
    if labels.ndim == 1:
        return jax.nn.one_hot(labels, num_classes)
    return jnp.asarray(labels, jnp.float32)


@functools.lru_cache(maxsize=16)
def _make_trainer(protocol: Protocol, count: int, image_shape, num_classes: int):
    """A compiled ``train(key, images, targets) -> (params, losses)`` for one shape
    (kept, so that every seed of a set reuses one compiled program)."""
    height, width, _ = image_shape
    batch_size = min(protocol.batch_size, count)
    batches = math.ceil(count / batch_size)

    def loss_fn(params, images, targets, weights):
        logits = convnet.convnet_logits(params, images, image_shape=image_shape)
        losses = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=1)
        return jnp.sum(weights * losses) / jnp.sum(weights)

    def run_phase(params, key, images, targets, learning_rate, epochs):
        optimizer = optax.chain(optax.add_decayed_weights(protocol.weight_decay),
                                optax.sgd(learning_rate, momentum=protocol.momentum))

        def epoch(carry, epoch_key):
            params, state = carry
            order_key, augment_key = jax.random.split(epoch_key)
            # The last batch of an epoch is smaller when count is not a
            # multiple of the batch size; its padding rows get weight 0.
            order = jnp.concatenate([jax.random.permutation(order_key, count),
                                     jnp.full(batches * batch_size - count, -1)])
            order = order.reshape(batches, batch_size)

            def step(carry, inputs):
                params, state = carry
                rows, step_key = inputs
                batch = images[jnp.maximum(rows, 0)]
                weights = (rows >= 0).astype(jnp.float32)
                if protocol.augment:
                    # The fill is the mean pixel of the batch's real rows, not of
                    # its padding.
                    fill = jnp.sum(weights * jnp.mean(batch, axis=1)) / jnp.sum(weights)
                    batch = augment.dc_augment(step_key, batch.reshape(-1, height, width),
                                               fill=fill)
                loss, grads = jax.value_and_grad(loss_fn)(
                    params, batch.reshape(batch_size, -1), targets[jnp.maximum(rows, 0)],
                    weights)
                updates, state = optimizer.update(grads, state, params)
                return (optax.apply_updates(params, updates), state), (loss, jnp.sum(weights))

            (params, state), (losses, counts) = jax.lax.scan(
                step, (params, state), (order, jax.random.split(augment_key, batches)))
            return (params, state), jnp.sum(losses * counts) / jnp.sum(counts)

        (params, _), losses = jax.lax.scan(epoch, (params, optimizer.init(params)),
                                           jax.random.split(key, epochs))
        return params, losses

    @jax.jit
    def train(key, images, targets):
        init_key, first_key, second_key = jax.random.split(key, 3)
        params = convnet.init_convnet(init_key, image_shape=image_shape, width=protocol.width,
                                      depth=protocol.depth, num_classes=num_classes)
        first = protocol.epochs // 2
        params, first_losses = run_phase(params, first_key, images, targets,
                                         protocol.learning_rate, first)
        params, second_losses = run_phase(params, second_key, images, targets,
                                          protocol.learning_rate / 10, protocol.epochs - first)
        return params, jnp.concatenate([first_losses, second_losses])

    return train


def train_convnet(images, labels, *, standardize: tuple[float, float], seed: int = 0,
                  protocol: Protocol = Protocol(), image_shape=(28, 28, 1),
                  num_classes: int = 10):
    """Train the ConvNet from scratch on ``(images, labels)`` alone, by the protocol.

    Args:
      images: (n, H*W) images on the data's [0, 1] pixel scale.
      labels: (n,) integer classes, or (n, num_classes) rows of probabilities.
      standardize: ``(mean, std)`` of the real training pixels
        (:func:`standardization`); the network reads ``(images - mean) / std``.
      seed: seeds the initialization, the batch order and the augmentation.
      protocol: the settings.
      image_shape: ``(height, width, channels)``; one channel is supported.
      num_classes: number of classes.

    Returns:
      ``(params, losses)``: the trained weights (as :func:`distill.convnet.init_convnet`)
      and the (epochs,) training loss of each epoch, the mean over its images
      (NumPy).

    Raises:
      ValueError: on images or labels of the wrong shape, non-finite values,
        labels out of range, or images with more than one channel.
      FloatingPointError: when the training loss becomes NaN or infinite.
    """
    image_shape = tuple(image_shape)
    if image_shape[2] != 1:
        raise ValueError(f"the augmentation handles one channel, got image_shape {image_shape}")
    images = checks.images(images, num_features=math.prod(image_shape))
    targets = _targets(labels, images.shape[0], num_classes)
    mean, std = standardize
    train = _make_trainer(protocol, images.shape[0], image_shape, num_classes)
    params, losses = train(jax.random.PRNGKey(seed),
                           (jnp.asarray(images, jnp.float32) - mean) / std, targets)
    losses = np.asarray(losses)
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmin(np.isfinite(losses)))
        raise FloatingPointError(f"the ConvNet's training loss became {losses[bad]} at epoch "
                                 f"{bad + 1}")
    return params, losses


@jax.jit
def _correct(params, images, labels):
    logits = convnet.convnet_logits(params, images)
    return jnp.sum(jnp.argmax(logits, axis=1) == labels)


def convnet_accuracy(params, images, labels, *, standardize: tuple[float, float],
                     batch_size: int = 50) -> float:
    """Fraction of ``images`` the ConvNet classifies as ``labels``.

    Args:
      params: the ConvNet's weights.
      images: (n, 784) images on the [0, 1] pixel scale.
      labels: (n,) integer classes.
      standardize: the ``(mean, std)`` the network was trained with.
      batch_size: images per forward pass. It bounds the memory, and small
        batches are faster on CPU: testing 10,000 MNIST images took 14 s at
        50 against 21 s at 500 (two cores, median of 3), likely because the
        first block's 128-channel maps of 50 images fit in the CPU's cache.

    Returns:
      The accuracy in [0, 1], a Python float.
    """
    mean, std = standardize
    images = (np.asarray(images, np.float32) - mean) / std
    labels = np.asarray(labels)
    correct = 0
    for start in range(0, len(images), batch_size):
        correct += int(_correct(params, images[start:start + batch_size],
                                labels[start:start + batch_size]))
    return correct / len(images)


def test_accuracies(images, labels, dataset: Dataset, *, seeds=(0, 1, 2, 3, 4),
                    protocol: Protocol = Protocol(), use_cache: bool = True,
                    progress: bool = True) -> np.ndarray:
    """Score a set by the protocol: one ConvNet per seed, tested on the real test split.

    Cached on disk with the distillation runs (:func:`distill.cache.runs_dir`,
    which two executions of a chapter can share), keyed on the set, the
    dataset, the seeds, the protocol and the helper's code.

    Args:
      images: (n, 784) images on the data's [0, 1] pixel scale.
      labels: (n,) integer classes, or (n, 10) rows of probabilities.
      dataset: the real dataset: its training pixels set the standardization,
        its test split scores the networks.
      seeds: one trained network each.
      protocol: the settings.
      use_cache: read and write the on-disk cache.
      progress: show a progress bar over the seeds.

    Returns:
      (len(seeds),) test accuracies in [0, 1], in the order of ``seeds``.

    Raises:
      ValueError, FloatingPointError: as :func:`train_convnet`.
    """
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one initialization")
    images = np.asarray(images)
    labels = np.asarray(labels)
    standardize = standardization(dataset)

    def compute():
        accuracies = []
        for seed in tqdm(seeds, desc="ConvNets trained", disable=not progress):
            params, _ = train_convnet(images, labels, standardize=standardize, seed=seed,
                                      protocol=protocol)
            accuracies.append(convnet_accuracy(params, dataset.test.images, dataset.test.labels,
                                               standardize=standardize))
        return {"accuracies": np.array(accuracies)}

    key = {"set": [cache.fingerprint(images), cache.fingerprint(labels)],
           "train": cache.fingerprint(dataset.train.images),
           "test": [cache.fingerprint(dataset.test.images), cache.fingerprint(dataset.test.labels)],
           "seeds": seeds, "protocol": dataclasses.asdict(protocol)}
    return cache.cached("convnet-protocol", key, compute, enabled=use_cache,
                        folder=cache.runs_dir())["accuracies"]
