"""Property-based tests (hypothesis) of the helper's shape and label handling.

Each property holds for every input hypothesis generates: arrays of any
size, labels in and out of range, counts that do and do not divide.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from distill import checks, cli, distillation, evaluate, io, model
from distill.data import Split

# derandomize: the same examples on every run, so that a failure in CI
# happens again on a laptop.
settings.register_profile("distill", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("distill")

num_classes = st.integers(2, 12)
finite_floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def labelled_images(draw, soft=False, classes=num_classes):
    """(images, labels, num_classes): k finite float32 images and valid labels."""
    classes = draw(classes)
    k = draw(st.integers(1, 12))
    features = draw(st.integers(1, 40))
    images = draw(hnp.arrays(np.float32, (k, features), elements=finite_floats))
    if soft:
        weights = draw(hnp.arrays(np.float64, (k, classes), elements=st.floats(0.01, 1.0)))
        labels = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    else:
        labels = draw(hnp.arrays(np.int64, k, elements=st.integers(0, classes - 1)))
    return images, labels, classes


@given(st.integers(1, 1000), num_classes)
def test_images_divide_among_classes_exactly_or_the_error_says_which_multiples(total, classes):
    if total % classes == 0:
        assert checks.images_per_class(total, classes) * classes == total
        return
    with pytest.raises(ValueError) as error:
        checks.images_per_class(total, classes)
    message = str(error.value)
    assert f"{total} images cannot be split evenly among {classes} classes" in message
    suggested = [int(n) for n in message.split("(e.g. ")[1].rstrip(")").split(" or ")]
    assert all(n % classes == 0 and n > 0 for n in suggested)
    assert min(abs(n - total) for n in suggested) < classes  # the nearest multiples


@given(labelled_images(classes=st.just(10)), st.booleans(), st.floats(1e-8, 1e3))
def test_a_valid_set_round_trips_through_a_file(tmp_path_factory, example, soft, l2reg):
    images, labels, classes = example
    if soft:
        labels = np.eye(classes, dtype=np.float32)[labels]
    path = io.save_distilled(tmp_path_factory.mktemp("set") / "s.npz", images, labels, l2reg)
    loaded = io.load_distilled(path)
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.l2reg == pytest.approx(l2reg, rel=1e-6)  # stored as float32


@given(labelled_images(), st.integers(-5, 20))
def test_labels_are_accepted_exactly_when_in_range(example, bad_value):
    images, labels, classes = example
    labels = labels.copy()
    labels[0] = bad_value
    if 0 <= bad_value < classes:
        checks.labels(labels, num_classes=classes, count=len(images))
        return
    with pytest.raises(ValueError, match=rf"labels must lie in 0..{classes - 1}.*outside: "
                                         rf".*{bad_value}"):
        checks.labels(labels, num_classes=classes, count=len(images))


@given(labelled_images(), st.integers(0, 3))
def test_one_label_per_image_or_the_error_gives_both_counts(example, extra):
    images, labels, classes = example
    labels = np.concatenate([labels, labels[:extra]])
    if extra == 0:
        checks.labels(labels, num_classes=classes, count=len(images))
        return
    with pytest.raises(ValueError, match=rf"^{len(images)} images but {len(labels)} labels$"):
        checks.labels(labels, num_classes=classes, count=len(images))


@given(labelled_images(), st.sampled_from([np.nan, np.inf, -np.inf]), st.data())
def test_any_non_finite_pixel_is_refused(example, value, drawn):
    images, _, _ = example
    row = drawn.draw(st.integers(0, images.shape[0] - 1))
    column = drawn.draw(st.integers(0, images.shape[1] - 1))
    images = images.copy()
    images[row, column] = value
    with pytest.raises(ValueError, match=r"images contain NaN or infinite values \(1 of"):
        checks.images(images)


@given(hnp.arrays(st.sampled_from([np.uint8, np.int32, np.int64, np.bool_]),
                  hnp.array_shapes(min_dims=2, max_dims=2, max_side=5)))
def test_images_must_be_floating_point(images):
    with pytest.raises(ValueError, match=f"images must be floating point.*got dtype {images.dtype}"):
        checks.images(images)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=4, max_side=4)
                  .filter(lambda shape: len(shape) != 2), elements=finite_floats))
def test_images_must_be_a_2d_array(images):
    with pytest.raises(ValueError, match=rf"images must be a 2-D array \(n, pixels\), got shape "
                                         rf"{re.escape(str(images.shape))}"):
        checks.images(images)


@given(labelled_images(soft=True))
def test_soft_labels_are_probabilities(example):
    images, labels, classes = example
    checks.labels(labels, num_classes=classes, count=len(images))
    with pytest.raises(ValueError, match="must be probabilities"):
        checks.labels(labels * 2, num_classes=classes)


@settings(max_examples=8)  # each new shape compiles: fewer, still varied
@given(st.integers(1, 6), num_classes, st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_the_initial_set_has_each_class_in_order_the_same_number_of_times(per_class, classes,
                                                                          features, seed):
    config = distillation.DistillConfig(images_per_class=per_class, seed=seed)
    images, labels = distillation.initial_distilled_set(config, classes, features)
    assert images.shape == (per_class * classes, features)
    assert np.bincount(np.asarray(labels), minlength=classes).tolist() == [per_class] * classes
    assert np.all(np.diff(np.asarray(labels)) >= 0)
    assert np.all(np.isfinite(images))
    again, _ = distillation.initial_distilled_set(config, classes, features)
    np.testing.assert_array_equal(images, again)  # the seed fixes it


@settings(max_examples=8)  # each new shape compiles: fewer, still varied
@given(labelled_images(), st.floats(1e-4, 10.0))
def test_hard_labels_and_their_one_hot_soft_labels_give_the_same_objective(example, l2reg):
    images, labels, classes = example
    images = images / 1e3  # keep the scores moderate
    W = jnp.asarray(np.random.default_rng(len(labels)).normal(size=(images.shape[1], classes)),
                    jnp.float32)
    hard = model.logistic_objective(W, l2reg, (jnp.asarray(images), jnp.asarray(labels)))
    soft = model.logistic_objective(W, l2reg, (jnp.asarray(images),
                                               jax_one_hot(labels, classes)))
    np.testing.assert_allclose(hard, soft, rtol=2e-5)
    np.testing.assert_allclose(model.data_loss(W, images, labels),
                               model.logistic_objective(W, 0.0, (images, labels)), rtol=2e-5)


def jax_one_hot(labels, classes):
    return jnp.asarray(np.eye(classes, dtype=np.float32)[labels])


@given(st.integers(1, 5), num_classes, st.integers(0, 1000), st.data())
def test_random_real_subsets_take_each_class_equally_and_never_twice(per_class, classes, seed,
                                                                     drawn):
    counts = drawn.draw(st.lists(st.integers(per_class, per_class + 6), min_size=classes,
                                 max_size=classes))
    labels = np.repeat(np.arange(classes), counts).astype(np.int32)
    images = np.arange(len(labels), dtype=np.float32)[:, None]  # each row names its index
    subset_images, subset_labels = evaluate.random_real_subset(Split(images, labels), per_class,
                                                               seed, classes)
    indices = subset_images[:, 0].astype(int)
    assert len(set(indices)) == len(indices) == per_class * classes
    np.testing.assert_array_equal(labels[indices], subset_labels)
    assert np.bincount(subset_labels).tolist() == [per_class] * classes
    with pytest.raises(ValueError, match=rf"class \d+ has {min(counts)} images, fewer than"):
        evaluate.random_real_subset(Split(images, labels), min(counts) + 1, seed, classes)


@given(num_classes, st.data())
def test_a_confusion_matrix_counts_every_image_once(classes, drawn):
    n = drawn.draw(st.integers(0, 50))
    labels = st.integers(0, classes - 1)
    true = np.array(drawn.draw(st.lists(labels, min_size=n, max_size=n)), dtype=int)
    predicted = np.array(drawn.draw(st.lists(labels, min_size=n, max_size=n)), dtype=int)
    counts = evaluate.confusion_matrix(true, predicted, classes)
    assert counts.sum() == n and np.trace(counts) == np.sum(true == predicted)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(true, minlength=classes))


@given(st.integers(-20, 200))
def test_the_command_line_shares_images_among_the_ten_classes(total):
    args = cli.build_parser().parse_args(["--images", str(total)])
    if total > 0 and total % 10 == 0:
        assert cli.config_from_args(args).images_per_class == total // 10
        return
    with pytest.raises(ValueError, match=rf"^--images {total}: "):
        cli.config_from_args(args)

