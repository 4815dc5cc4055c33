"""Distilling for a network: logistic regression on a ConvNet's features, a pool, the loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import convnet, network_distillation
from distill.config import NetworkConfig
from tests.conftest import make_toy_dataset

#: 8x8 single-channel "images": ten separable blobs.
SHAPE = (8, 8, 1)
SMALL = NetworkConfig(images_per_class=1, steps=12, width=4, depth=2, pool_size=2,
                      reset_every=4, batch_size=32, learning_rate=0.05)


@pytest.fixture(scope="module")
def blobs():
    return make_toy_dataset(num_features=64, per_class=20, seed=2)


def _distill(train, config=SMALL, **options):
    return network_distillation.distill_for_network(
        train, config, standardize=(0.5, 0.3), image_shape=SHAPE, progress=False, **options)


@pytest.mark.parametrize("learn", ["images", "log_l2reg", "label_logits"])
def test_hypergradients_match_finite_differences_in_float64(x64, learn):
    """The implicit hypergradient through the inner solve and the network's features,
    for every learned quantity, against central differences of the outer loss."""
    config = NetworkConfig(images_per_class=1, width=3, depth=2, learn_l2reg=True,
                           learn_labels=True, l2reg=0.05, inner_tol=1e-11, inner_maxiter=2000)
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    hard = np.arange(10)
    variables = network_distillation.initial_variables(
        config, jax.random.normal(keys[0], (10, 64), jnp.float64), labels=hard)
    variables = jax.tree.map(lambda value: jnp.asarray(value, jnp.float64), variables)
    network = jax.tree.map(lambda value: jnp.asarray(value, jnp.float64),
                           convnet.init_convnet(keys[1], image_shape=SHAPE, width=3, depth=2))
    real = jax.random.normal(keys[2], (40, 64), jnp.float64)
    real_labels = jnp.arange(40) % 10
    loss = network_distillation.make_outer_loss(config, hard, image_shape=SHAPE)

    def outer(value):
        return loss({**variables, learn: value}, network, real, real_labels)[0]

    (_, inner), gradient = jax.value_and_grad(
        lambda v: loss(v, network, real, real_labels), has_aux=True)(variables)
    assert float(inner.state.error) <= config.inner_tol
    direction = jax.random.normal(keys[3], jnp.shape(variables[learn]), jnp.float64)
    epsilon = 1e-4
    finite_difference = (outer(variables[learn] + epsilon * direction)
                         - outer(variables[learn] - epsilon * direction)) / (2 * epsilon)
    implicit = jnp.sum(gradient[learn] * direction)
    assert abs(float(implicit)) > 1e-6  # a direction along which the loss changes
    # Central differences of a loss whose inner solve stops at a gradient norm
    # of 1e-11 are good to about 1e-5 relative here.
    np.testing.assert_allclose(float(implicit), float(finite_difference), rtol=1e-4)


def test_a_run_lowers_the_loss_on_real_batches_and_returns_a_set_on_the_pixel_scale(blobs):
    result = _distill(blobs.train, dataclasses.replace(SMALL, steps=40))
    assert result.steps == 40 and len(result.loss_history) == 40
    assert np.mean(result.loss_history[-8:]) < 0.7 * np.mean(result.loss_history[:8])
    assert result.images.shape == (10, 64) and result.images.dtype == np.float32
    np.testing.assert_array_equal(result.labels, np.arange(10))
    # The images started as real ones and moved on the pixel scale, not far from [0, 1].
    assert -1.0 < result.images.min() and result.images.max() < 2.0
    assert result.l2reg != SMALL.l2reg  # learned
    assert result.inner_not_converged == 0 and len(result.inner_errors) == 40


def test_a_seed_gives_one_result(blobs):
    first, again = _distill(blobs.train), _distill(blobs.train)
    np.testing.assert_array_equal(first.images, again.images)
    other = _distill(blobs.train, dataclasses.replace(SMALL, seed=1))
    assert not np.allclose(first.images, other.images)


def test_learned_labels_are_rows_of_probabilities(blobs):
    result = _distill(blobs.train, dataclasses.replace(SMALL, learn_labels=True))
    assert result.labels.shape == (10, 10)
    np.testing.assert_allclose(result.labels.sum(axis=1), 1.0, rtol=1e-5)
    assert (result.labels.argmax(axis=1) == np.arange(10)).all()


def test_checkpoints_hold_the_set_of_each_saved_step_and_the_last_one_on_ctrl_c(blobs):
    saved = []

    def checkpoint(images, labels, l2reg, history):
        saved.append((images.copy(), l2reg, list(history)))

    def stop_after_seven(step, loss, variables):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _distill(blobs.train, checkpoint=checkpoint, checkpoint_every=3,
                 callback=stop_after_seven)
    assert [len(history) for _, _, history in saved] == [3, 6, 7]
    # Resuming from the last checkpoint starts from its images and its l2reg
    # (with steps too small to move them).
    images, l2reg, _ = saved[-1]
    resumed = _distill(blobs.train, dataclasses.replace(SMALL, steps=1, learning_rate=1e-9),
                       init_images=images, init_l2reg=l2reg, start_step=7)
    np.testing.assert_allclose(resumed.images, images, atol=1e-5)
    assert resumed.l2reg == pytest.approx(l2reg, rel=1e-6)


def test_a_resumed_run_starts_from_the_saved_values_and_draws_new_batches(blobs):
    start = _distill(blobs.train, dataclasses.replace(SMALL, steps=3))
    first = []

    def record(into):
        return lambda step, loss, variables: into.append(loss)

    options = dict(init_images=start.images, init_l2reg=start.l2reg)
    _distill(blobs.train, dataclasses.replace(SMALL, steps=1), callback=record(first), **options)
    again, later = [], []
    _distill(blobs.train, dataclasses.replace(SMALL, steps=1), callback=record(again), **options)
    _distill(blobs.train, dataclasses.replace(SMALL, steps=1), start_step=3,
             callback=record(later), **options)
    assert first == again  # the same start, batch and network: the same loss
    assert later != first  # after 3 steps: another batch and other networks


@pytest.mark.parametrize("pool_learning_rate, updates", [(0.0, 0), (1e-3, 5)])
def test_the_pool_is_trained_once_per_step_unless_its_learning_rate_is_zero(
        blobs, monkeypatch, pool_learning_rate, updates):
    created, trained = [], []
    init_convnet, programs = convnet.init_convnet, network_distillation._programs
    monkeypatch.setattr(convnet, "init_convnet",
                        lambda *args, **kwargs: created.append(1) or init_convnet(*args, **kwargs))

    def counting_programs(*args):
        loss_and_grad, train_network, optimizer = programs(*args)
        return (loss_and_grad, lambda *inputs: trained.append(1) or train_network(*inputs),
                optimizer)

    monkeypatch.setattr(network_distillation, "_programs", counting_programs)
    config = dataclasses.replace(SMALL, pool_size=1, reset_every=2, steps=5,
                                 pool_learning_rate=pool_learning_rate)
    result = _distill(blobs.train, config)
    assert result.steps == 5 and len(trained) == updates
    assert len(created) == 3  # the first network, then a fresh one after steps 2 and 4


def test_inner_solves_that_stop_early_are_counted_and_warned_about(blobs):
    with pytest.warns(RuntimeWarning, match=r"maxiter=1 .*at 3 of 3 steps"):
        result = _distill(blobs.train, dataclasses.replace(SMALL, steps=3, inner_maxiter=1))
    assert result.inner_not_converged == 3


@pytest.mark.parametrize("options, message", [
    (dict(init_images=np.zeros((7, 64), np.float32)), "init_images must hold 10 images"),
    (dict(init_images=np.zeros((10, 50), np.float32)), "init_images must have 64 pixels"),
])
def test_bad_starting_images_are_refused_naming_them(blobs, options, message):
    with pytest.raises(ValueError, match=message):
        _distill(blobs.train, **options)
