"""Distilling for a network: the inner problem moved from pixels to a ConvNet's features.

Part II's inner problem is logistic regression on the distilled pixels. Here
it is the same logistic regression on the *features* ``phi(S)`` of a ConvNet
(:func:`distill.convnet.convnet_features`, divided by the square root of
their number): ``W*`` minimizes

    mean_i CE(y_i, softmax(phi(S)_i @ W)) + l2reg / 2 * ||W||^2,

and the outer loss is its cross-entropy on a batch of real images' features,
``CE(y_real, softmax(phi(X_real) @ W*))``. ``W*`` is found by JAXopt's
L-BFGS and differentiated implicitly, as in Part II
(:func:`distill.model.make_inner_solver`); the hypergradient with respect to
the pixels then flows back through ``phi``.

One fixed network would let the images overfit its features. The networks
come from a pool (as in FRePo, Zhou et al. 2022): each is trained online on
the distilled set, one Adam update each time it is used, and re-initialized
after ``reset_every`` updates, so the images are judged by networks at every
stage of training. The images start as a random real subset and are updated
by Adam on the standardized pixel scale (and, when learned, ``log(l2reg)``
and the label logits with them).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from distill import checks, convnet, evaluate, implicit, model, sharding
from distill.config import NetworkConfig
from distill.data import Split


@dataclasses.dataclass
class NetworkDistillResult:
    """What :func:`distill_for_network` returns.

    Attributes:
      images: (k, num_features) float32 distilled images, on the data's pixel scale.
      labels: (k,) integer classes, or (k, num_classes) learned soft labels.
      l2reg: the inner L2 strength (learned when ``config.learn_l2reg``).
      loss_history: the outer loss on each step's real batch (before that
        step's update), one per step.
      inner_errors: the inner solver's gradient norm at each step.
      inner_not_converged: how many inner solves stopped above ``inner_tol``.
      steps: outer steps taken.
      seconds: wall time of the run.
      config: the configuration.
      data_split: how each real batch was split over the devices
        (:class:`distill.sharding.ExampleSplit`).
    """

    images: np.ndarray
    labels: np.ndarray
    l2reg: float
    loss_history: list
    inner_errors: list
    inner_not_converged: int
    steps: int
    seconds: float
    config: NetworkConfig
    data_split: sharding.ExampleSplit | None = None


def initial_variables(config: NetworkConfig, images, num_classes: int = 10, *,
                      l2reg=None, labels=None) -> dict:
    """The outer variables: the images, and what else ``config`` learns.

    Args:
      config: says whether ``l2reg`` and the labels are learned.
      images: (k, num_features) starting images, already standardized.
      num_classes: number of classes.
      l2reg: the starting ``l2reg`` (default ``config.l2reg``).
      labels: (k, num_classes) starting soft labels when they are learned
        (default: one-hot rows of the class of each image, softened so that
        their logits are finite).

    Returns:
      ``{"images"}``, plus ``"log_l2reg"`` and ``"label_logits"`` when learned.
    """
    variables = {"images": jnp.asarray(images, jnp.float32)}
    if config.learn_l2reg:
        variables["log_l2reg"] = jnp.log(jnp.asarray(config.l2reg if l2reg is None else l2reg,
                                                     jnp.float32))
    if config.learn_labels:
        if labels is None:
            raise ValueError("learned labels need starting labels")
        labels = jnp.asarray(labels)
        if labels.ndim == 1:
            labels = 0.9 * jax.nn.one_hot(labels, num_classes) + 0.1 / num_classes
        variables["label_logits"] = jnp.log(jnp.clip(labels.astype(jnp.float32), 1e-6, 1.0))
    return variables


def make_outer_loss(config: NetworkConfig, hard_labels, *, image_shape=(28, 28, 1),
                    num_classes: int = 10, **inner_solver_options):
    """The outer loss of logistic regression on a ConvNet's features.

    Args:
      config: the inner solver's tolerance and iteration limit, ``l2reg``,
        and what is learned.
      hard_labels: (k,) classes of the distilled images (their targets unless
        labels are learned).
      image_shape: ``(height, width, channels)`` of one image.
      num_classes: number of classes.
      **inner_solver_options: passed to :func:`distill.model.make_inner_solver`
        (e.g. ``implicit_diff=False`` to unroll the inner iterations).

    Returns:
      ``loss(variables, network_params, real_images, real_labels,
      real_weights=None) -> (loss, inner)``. ``variables`` as
      :func:`initial_variables` gives them (images standardized);
      ``network_params`` a ConvNet's weights; ``real_images`` (n,
      num_features) standardized, ``real_labels`` (n,) classes,
      ``real_weights`` (n,) weights of the examples (None: all equal). ``inner``
      is the inner solver's result (``params`` is ``W*``, ``state.error`` its
      gradient norm). ``jax.grad(loss, has_aux=True)`` gives the
      hypergradient with respect to every variable.
    """
    # Conjugate gradient on the inner Hessian, symmetric positive definite (Part II).
    options = {"implicit_diff_solve": implicit.linear_solve("cg", config.implicit_diff),
               "backend": config.implicit_diff, **inner_solver_options}
    solver = model.make_inner_solver(tol=config.inner_tol, maxiter=config.inner_maxiter,
                                     objective=model.logistic_objective, method="lbfgs",
                                     **options)
    hard_labels = jnp.asarray(hard_labels)

    def features(network_params, images):
        phi = convnet.convnet_features(network_params, images, image_shape=image_shape)
        return phi / jnp.sqrt(phi.shape[1])

    def loss(variables, network_params, real_images, real_labels, real_weights=None):
        distilled = features(network_params, variables["images"])
        l2reg = jnp.exp(variables["log_l2reg"]) if "log_l2reg" in variables else config.l2reg
        targets = (jax.nn.softmax(variables["label_logits"]) if "label_logits" in variables
                   else hard_labels)
        init = jnp.zeros((distilled.shape[1], num_classes), distilled.dtype)
        inner = solver.run(init, l2reg, (distilled, targets))
        return model.data_loss(inner.params, features(network_params, real_images),
                               real_labels, real_weights), inner

    return loss


def _set_of(variables, hard_labels, config: NetworkConfig, standardize):
    """``(images on the pixel scale, labels, l2reg)`` that ``variables`` describe."""
    mean, std = standardize
    variables = sharding.to_host(variables)
    images = np.asarray(variables["images"], np.float32) * std + mean
    if config.learn_labels:
        labels = np.asarray(jax.nn.softmax(variables["label_logits"]), np.float32)
    else:
        labels = np.asarray(hard_labels)
    l2reg = float(jnp.exp(variables["log_l2reg"])) if config.learn_l2reg else config.l2reg
    return images.astype(np.float32), labels, l2reg


@functools.lru_cache(maxsize=8)
def _programs(config: NetworkConfig, hard_labels: tuple, image_shape: tuple, num_classes: int):
    """The compiled outer loss with its hypergradient, and the pool's online update.

    Kept per setting (``config`` with ``seed`` and ``steps`` left out), so that
    runs that differ only in those share the compiled programs.
    """
    hard_labels = np.asarray(hard_labels)
    loss_and_grad = jax.jit(jax.value_and_grad(
        make_outer_loss(config, hard_labels, image_shape=image_shape, num_classes=num_classes),
        has_aux=True))
    pool_optimizer = optax.adam(config.pool_learning_rate)

    @jax.jit
    def train_network(params, state, variables):
        """One Adam update of a pool network on the distilled set (cross-entropy)."""
        targets = (jax.nn.softmax(variables["label_logits"]) if "label_logits" in variables
                   else jax.nn.one_hot(hard_labels, num_classes))

        def loss(params):
            logits = convnet.convnet_logits(params, variables["images"], image_shape=image_shape)
            return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=1))

        value, gradient = jax.value_and_grad(loss)(params)
        updates, state = pool_optimizer.update(gradient, state, params)
        return optax.apply_updates(params, updates), state, value

    return loss_and_grad, train_network, pool_optimizer


def warn_inner_not_converged(config: NetworkConfig, count: int, inner_errors, *,
                             stacklevel: int = 2) -> None:
    """Warn that ``count`` inner solves stopped at ``config.inner_maxiter`` above ``inner_tol``.

    Args:
      config: the run's settings (its tolerance and iteration limit).
      count: how many inner solves did not converge.
      inner_errors: the inner gradient norm of every step.
      stacklevel: passed to :func:`warnings.warn`.
    """
    warnings.warn(
        f"the inner solver stopped at maxiter={config.inner_maxiter} before reaching "
        f"tol={config.inner_tol} at {count} of {len(inner_errors)} steps (largest "
        f"error {max(inner_errors):.3g}); their hypergradients are not those of the true "
        "inner solution: raise inner_maxiter or inner_tol", RuntimeWarning,
        stacklevel=stacklevel + 1)


def distill_for_network(train: Split, config: NetworkConfig = NetworkConfig(), *,
                        standardize: tuple[float, float], num_classes: int = 10,
                        image_shape=(28, 28, 1), init_images=None, init_l2reg=None,
                        init_labels=None, start_step: int = 0, mesh=None,
                        progress: bool = True, callback=None, checkpoint=None,
                        checkpoint_every: int = 50) -> NetworkDistillResult:
    """Learn ``config.images_per_class`` images per class that teach a ConvNet.

    Setup, then the loop, then the result. Each step draws a batch of real
    images, takes the next network of the pool, computes the outer loss and
    its hypergradient (implicit differentiation of the inner logistic
    regression on the network's features), updates the images with Adam, and
    gives that network one online update on the distilled set.

    Each real batch is split over the devices of ``mesh`` along the examples
    (:mod:`distill.sharding`; padded with examples of weight zero when the
    batch size is not a multiple of the device count); the distilled set and
    the networks are whole on every device.

    Args:
      train: the real training split (images on the [0, 1] pixel scale).
      config: the settings (:class:`~distill.config.NetworkConfig`).
      standardize: ``(mean, std)`` of the real training pixels
        (:func:`distill.protocol.standardization`); the networks read
        standardized images.
      num_classes: number of classes.
      image_shape: ``(height, width, channels)`` of one image.
      init_images: (k, num_features) starting images on the pixel scale
        (default: a random real subset drawn with ``config.seed``).
      init_l2reg: the starting ``l2reg`` (default ``config.l2reg``).
      init_labels: (k, num_classes) starting soft labels, when learned.
      start_step: steps an earlier run already took from these starting
        values (a resumed run): the real batches and the pool's networks are
        drawn afresh for steps ``start_step + 1, ...``. A resumed run starts
        a new pool and a new Adam state, so it is not the same as an
        uninterrupted run.
      mesh: the devices (:func:`distill.sharding.make_mesh`); all that JAX
        sees when None.
      progress: show a progress bar.
      callback: ``callback(step, loss, variables)`` after each step.
      checkpoint: ``checkpoint(images, labels, l2reg, loss_history)`` every
        ``checkpoint_every`` steps, and with the last completed step when the
        run is interrupted (Ctrl-C) or its loss becomes NaN or infinite.
      checkpoint_every: steps between checkpoints.

    Returns:
      A :class:`NetworkDistillResult`.

    Raises:
      ValueError: on training data or starting values of the wrong shape.
      FloatingPointError: when the outer loss or its hypergradient becomes
        NaN or infinite (the last completed step is checkpointed first).
    """
    # Setup.
    start = time.perf_counter()
    num_features = math.prod(image_shape)
    images = checks.images(train.images, "train.images", num_features=num_features)
    labels = checks.labels(train.labels, "train.labels", num_classes=num_classes,
                           count=len(images), soft=False)
    checkpoint_every = checks.positive_int(checkpoint_every, "checkpoint_every")
    mean, std = standardize
    # Standardized by JAX, as the distilled images are; the batches are drawn
    # on the host and split over the devices at each step.
    real = np.asarray((jnp.asarray(images, jnp.float32) - mean) / std)
    real_labels = np.asarray(labels, np.int32)
    mesh = sharding.make_mesh() if mesh is None else mesh
    if init_images is None:
        init_images, hard_labels = evaluate.random_real_subset(train, config.images_per_class,
                                                               seed=config.seed,
                                                               num_classes=num_classes)
    else:
        hard_labels = np.repeat(np.arange(num_classes), config.images_per_class)
        init_images = checks.images(init_images, "init_images", num_features=num_features,
                                    count=len(hard_labels))
    variables = initial_variables(
        config, (np.asarray(init_images, np.float32) - mean) / std, num_classes,
        l2reg=init_l2reg, labels=hard_labels if init_labels is None else init_labels)
    loss_and_grad, train_network, pool_optimizer = _programs(
        dataclasses.replace(config, seed=0, steps=1), tuple(int(c) for c in hard_labels),
        tuple(image_shape), num_classes)
    optimizer = optax.adam(config.learning_rate)
    variables, opt_state = sharding.replicate(mesh, (variables, optimizer.init(variables)))

    def new_network(key):
        params = convnet.init_convnet(key, image_shape=image_shape, width=config.width,
                                      depth=config.depth, num_classes=num_classes)
        return sharding.replicate(mesh, (params, pool_optimizer.init(params)))

    if isinstance(start_step, bool) or int(start_step) != start_step or start_step < 0:
        raise ValueError(f"start_step must be a non-negative integer, got {start_step!r}")
    start_step = int(start_step)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), start_step)
    pool, ages = [], []
    for index in range(config.pool_size):
        key, network_key = jax.random.split(key)
        pool.append(new_network(network_key))
        # Every network starts untrained; their resets are staggered, so that
        # the pool soon holds networks at different stages of training.
        ages.append(index * config.reset_every // config.pool_size)
    rng = np.random.default_rng([config.seed, start_step])
    losses: list[float] = []
    inner_errors: list[float] = []

    def save():
        if checkpoint is not None:
            checkpoint(*_set_of(variables, hard_labels, config, standardize), list(losses))

    # The loop.
    steps, data_split = 0, sharding.split_of(config.batch_size, mesh.size)
    try:
        for step in tqdm(range(config.steps), desc="outer steps", disable=not progress,
                         mininterval=1.0):
            index = step % config.pool_size
            rows = rng.integers(0, len(real), config.batch_size)
            batch, weights, _ = sharding.shard_examples(mesh, real[rows],
                                                        real_labels[rows])
            (loss, inner), gradient = loss_and_grad(variables, pool[index][0], *batch, weights)
            loss = float(loss)
            finite = np.isfinite(loss) and all(bool(jnp.all(jnp.isfinite(leaf)))
                                               for leaf in jax.tree.leaves(gradient))
            if not finite:  # raised before the update: ``variables`` stay the last finite ones
                what = "outer loss" if not np.isfinite(loss) else "hypergradient"
                raise FloatingPointError(f"the {what} became non-finite at step {step + 1}"
                                         + (f" (the last loss was {losses[-1]:.4g})"
                                            if losses else ""))
            updates, opt_state = optimizer.update(gradient, opt_state, variables)
            variables = optax.apply_updates(variables, updates)
            losses.append(loss)
            inner_errors.append(float(inner.state.error))
            steps = step + 1
            if config.pool_learning_rate:  # 0: a fixed pool, never trained
                *pool[index], pool_loss = train_network(*pool[index], variables)
                if not np.isfinite(float(pool_loss)):
                    raise FloatingPointError(f"the training loss of pool network {index} "
                                             f"became {float(pool_loss)} at step {step + 1}")
            ages[index] += 1
            if ages[index] >= config.reset_every:
                key, network_key = jax.random.split(key)
                pool[index], ages[index] = new_network(network_key), 0
            if callback is not None:
                callback(step, loss, variables)
            if steps % checkpoint_every == 0:
                save()
    except (KeyboardInterrupt, FloatingPointError):
        if steps:
            save()
        raise

    # The result.
    not_converged = sum(not error <= config.inner_tol for error in inner_errors)
    if not_converged:
        warn_inner_not_converged(config, not_converged, inner_errors, stacklevel=3)
    final_images, final_labels, final_l2reg = _set_of(variables, hard_labels, config,
                                                      standardize)
    return NetworkDistillResult(
        images=final_images, labels=final_labels, l2reg=final_l2reg, loss_history=losses,
        inner_errors=inner_errors, inner_not_converged=not_converged, steps=steps,
        seconds=time.perf_counter() - start, config=config, data_split=data_split)
