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


def test_scaling_resizes_about_the_centre_with_the_original_values():
    images = np.zeros((40, 28, 28), np.float32)
    images[:, 10:18, 12:16] = 1.0  # a centred 8 x 4 bar
    out = np.asarray(augment.dc_augment(jax.random.PRNGKey(0), images, crop=0, scale=0.2,
                                        rotate=0))
    changed = [image for image in out if not np.array_equal(image, images[0])]
    assert len(changed) >= 5  # about a third of them are scaled
    heights, widths = set(), set()
    for image in changed:
        assert set(np.unique(image)) <= {0.0, 1.0}  # nearest neighbour: no new values
        rows, cols = np.nonzero(image)
        assert abs(rows.mean() - 13.5) <= 1 and abs(cols.mean() - 13.5) <= 1
        heights.add(rows.max() - rows.min() + 1)
        widths.add(cols.max() - cols.min() + 1)
    # Each side by up to 20%: 8 rows become 7 to 10, 4 columns 3 to 5.
    assert heights <= set(range(6, 11)) and widths <= set(range(3, 6))
    assert len(heights | widths) > 2


def test_rotation_turns_about_the_centre_by_at_most_the_angle():
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 4:6, 13:15] = 1.0  # a dot 9 rows above the centre (13.5, 13.5)
    angles = []
    for seed in range(30):
        out = np.asarray(augment.dc_augment(jax.random.PRNGKey(seed), image, crop=0,
                                            scale=0.0, rotate=45))[0]
        fill = image.mean()
        weights = np.clip(out - fill, 0, None)
        rows, cols = np.indices(out.shape)
        row = (weights * rows).sum() / weights.sum() - 13.5
        col = (weights * cols).sum() / weights.sum() - 13.5
        assert abs(np.hypot(row, col) - 9.0) < 0.5  # same distance from the centre
        angles.append(np.degrees(np.arctan2(col, -row)))
    assert max(abs(angle) for angle in angles) <= 45.5
    assert len({round(angle) for angle in angles}) > 3  # several angles drawn


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
