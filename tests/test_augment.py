"""DC's evaluation augmentation: one crop, scale or rotation per image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import augment


def _digits(n=12, seed=0):
    """Blobs on a 28x28 background of zeros, each in its own place."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.float32)
    for image in images:
        row, col = rng.integers(8, 16, size=2)
        image[row:row + 6, col:col + 4] = rng.uniform(0.5, 1.0, size=(6, 4))
    return jnp.asarray(images)


def test_no_crop_scale_or_rotation_leaves_the_images_unchanged():
    images = _digits()
    np.testing.assert_array_equal(
        augment.dc_augment(jax.random.PRNGKey(0), images, crop=0, scale=0.0, rotate=0), images)


def test_a_key_gives_one_batch_and_another_key_another():
    images = _digits()
    first = augment.dc_augment(jax.random.PRNGKey(0), images)
    assert first.shape == images.shape and first.dtype == images.dtype
    np.testing.assert_array_equal(first, augment.dc_augment(jax.random.PRNGKey(0), images))
    assert not np.array_equal(first, augment.dc_augment(jax.random.PRNGKey(1), images))


def test_crops_shift_each_image_by_whole_pixels_and_fill_with_the_batch_mean():
    images = np.asarray(_digits(n=40))
    out = np.asarray(augment.dc_augment(jax.random.PRNGKey(3), images, crop=4, scale=0.0,
                                        rotate=0))
    fill = images.mean()
    shifts = set()
    for image, shifted in zip(images, out):
        matches = []
        for dr in range(-4, 4):
            for dc in range(-4, 4):
                padded = np.pad(image, 4, constant_values=fill)
                if np.array_equal(shifted, padded[4 + dr:32 + dr, 4 + dc:32 + dc]):
                    matches.append((dr, dc))
        assert matches, "an augmented image is no whole-pixel shift of its original"
        shifts.update(matches)
    # Over 40 images, a third of them cropped, several different shifts occur.
    assert len(shifts) > 3


def test_scaling_keeps_a_centred_image_centred_and_rotation_keeps_its_mass_inside():
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 12:16, 12:16] = 1.0  # a centred square
    for seed in range(6):
        scaled = np.asarray(augment.dc_augment(jax.random.PRNGKey(seed), image, crop=0,
                                               scale=0.2, rotate=0))[0]
        rows, cols = np.nonzero(scaled)
        assert abs(rows.mean() - 13.5) <= 1 and abs(cols.mean() - 13.5) <= 1
        # nearest neighbour: only the original values
        assert set(np.unique(scaled)) <= {0.0, 1.0}
        rotated = np.asarray(augment.dc_augment(jax.random.PRNGKey(seed), image, crop=0,
                                                scale=0.0, rotate=45))[0]
        fill = image.mean()
        assert abs((rotated - fill).sum() - (image[0] - fill).sum()) < 0.05 * 16


@pytest.mark.parametrize("options, message", [
    (dict(crop=-1), "crop.*-1"),
    (dict(rotate=2.5), "rotate.*2.5"),
    (dict(scale=1.0), r"scale.*1\.0"),
])
def test_bad_settings_are_refused_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        augment.dc_augment(jax.random.PRNGKey(0), _digits(), **options)


def test_flat_images_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"\(n, height, width\).*\(2, 784\)"):
        augment.dc_augment(jax.random.PRNGKey(0), jnp.zeros((2, 784)))
