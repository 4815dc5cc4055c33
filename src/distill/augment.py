"""The evaluation protocol's data augmentation: DC's crop, scale or rotation.

Published scores of distilled MNIST sets train the evaluation ConvNet with
augmentation, and it decides the baseline: random real images score several
points higher with it. This module follows the augmentation of DC's code
(Zhao et al. 2021, ``utils.augment`` with strategy ``crop_scale_rotate``,
the one its evaluation uses on MNIST): every image of every batch gets one
transformation, drawn uniformly among

- **crop**: shifted by a whole number of pixels in ``[-crop, crop)`` along
  each axis, the uncovered border filled with the batch's mean pixel;
- **scale**: resized (nearest neighbour) to ``int(u * H)`` by ``int(v * W)``
  pixels, ``u`` and ``v`` uniform in ``[1 - scale, 1 + scale]``, then centred
  on an ``H`` by ``W`` canvas of zeros, or centre-cropped to it;
- **rotate**: turned about its centre by a whole number of degrees in
  ``[-rotate, rotate)``, the corners filled with the batch's mean pixel.

One difference: DC rotates with SciPy's cubic spline; this module
interpolates bilinearly, so that the whole augmentation is one compiled JAX
function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: DC's settings for MNIST: ``crop`` 4 pixels, ``scale`` 0.2, ``rotate`` 45 degrees.
DC_MNIST = {"crop": 4, "scale": 0.2, "rotate": 45}


def _crop(image, key, fill, crop):
    height, width = image.shape
    shift = jax.random.randint(key, (2,), -crop, crop) if crop else jnp.zeros(2, jnp.int32)
    rows = jnp.arange(height)[:, None] + shift[0]
    cols = jnp.arange(width)[None, :] + shift[1]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return jnp.where(inside, image[jnp.clip(rows, 0, height - 1), jnp.clip(cols, 0, width - 1)],
                     fill)


def _scale(image, key, scale):
    height, width = image.shape
    factors = jax.random.uniform(key, (2,), minval=1 - scale, maxval=1 + scale)
    new_height = jnp.floor(factors[0] * height).astype(jnp.int32)
    new_width = jnp.floor(factors[1] * width).astype(jnp.int32)
    # The resized image sits centred on a square canvas of side
    # max(new_height, new_width, height, width), whose centre H x W crop is the
    # output; output pixel (i, j) reads resized pixel (i + top, j + left).
    side = jnp.maximum(jnp.maximum(new_height, new_width), max(height, width))
    top = (side - height) // 2 - (side - new_height) // 2
    left = (side - width) // 2 - (side - new_width) // 2
    rows = jnp.arange(height)[:, None] + top
    cols = jnp.arange(width)[None, :] + left
    inside = (rows >= 0) & (rows < new_height) & (cols >= 0) & (cols < new_width)
    source_rows = jnp.clip(rows * height // new_height, 0, height - 1)  # nearest, as PyTorch's
    source_cols = jnp.clip(cols * width // new_width, 0, width - 1)
    return jnp.where(inside, image[source_rows, source_cols], 0.0)


def _rotate(image, key, fill, rotate):
    height, width = image.shape
    degrees = jax.random.randint(key, (), -rotate, rotate) if rotate else jnp.zeros((), jnp.int32)
    angle = jnp.deg2rad(degrees.astype(image.dtype))
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=image.dtype) - centre_row,
                              jnp.arange(width, dtype=image.dtype) - centre_col, indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    source = jnp.stack([cos * rows - sin * cols + centre_row, sin * rows + cos * cols + centre_col])
    # Interpolation is linear, so filling with 0 around ``image - fill`` and
    # adding ``fill`` back fills with ``fill`` (map_coordinates takes only a
    # constant known at compile time).
    return jax.scipy.ndimage.map_coordinates(image - fill, list(source), order=1,
                                             mode="constant", cval=0.0) + fill


def dc_augment(key, images, *, crop: int = 4, scale: float = 0.2, rotate: int = 45, fill=None):
    """One random crop, scale or rotation per image, as DC's evaluation augments MNIST.

    Args:
      key: a JAX PRNG key; the same key gives the same batch.
      images: (n, H, W) single-channel images, on whatever scale the
        network reads (DC augments normalized images).
      crop: largest shift in pixels (0: the crop leaves images unchanged).
      scale: largest relative change of each side, below 1 (0: unchanged).
      rotate: largest angle in degrees (0: unchanged).
      fill: the value crops and rotations fill uncovered pixels with
        (default: the batch's mean pixel, ``mean(images)``; pass the mean of
        the real rows when some rows are padding).

    Returns:
      (n, H, W) augmented images, same dtype.

    Raises:
      ValueError: when ``images`` is not 3-D, or a setting is out of range.
    """
    images = jnp.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, height, width), got {images.shape}")
    for name, value in (("crop", crop), ("rotate", rotate)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative whole number, got {value!r}")
    if not 0 <= scale < 1:
        raise ValueError(f"scale must lie in [0, 1), got {scale!r}")
    fill = jnp.mean(images) if fill is None else jnp.asarray(fill, images.dtype)
    choice_key, *keys = jax.random.split(key, 4)
    choices = jax.random.randint(choice_key, (images.shape[0],), 0, 3)
    per_image = [jax.random.split(k, images.shape[0]) for k in keys]
    cropped = jax.vmap(lambda im, k: _crop(im, k, fill, crop))(images, per_image[0])
    scaled = jax.vmap(lambda im, k: _scale(im, k, scale))(images, per_image[1])
    rotated = jax.vmap(lambda im, k: _rotate(im, k, fill, rotate))(images, per_image[2])
    choice = choices[:, None, None]
    return jnp.where(choice == 0, cropped, jnp.where(choice == 1, scaled, rotated))
