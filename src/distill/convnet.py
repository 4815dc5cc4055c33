"""The ConvNet of the dataset-distillation benchmarks, in plain JAX.

The network every paper of the field trains on a distilled set to score it
(DC, DSA, KIP, FRePo, RCIG): ``depth`` blocks of a 3x3 convolution
(``width`` channels), instance normalization, ReLU and 2x2 average pooling,
then one linear layer. On 28x28 grey images the first convolution pads by 3
(to 32x32), so that three poolings leave 4x4 maps: 2,048 features at width
128.

The parameters are a plain pytree (lists and dicts of arrays), initialized as
PyTorch initializes the reference implementation's layers, since the
evaluation protocol's learning rate was tuned for that initialization.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

#: Instance normalization's epsilon (as PyTorch's ``GroupNorm``).
NORM_EPSILON = 1e-5


def _as_nhwc(images, image_shape):
    """``(n, H*W*C)`` or ``(n, H, W)`` or ``(n, H, W, C)`` -> ``(n, H, W, C)``."""
    images = jnp.asarray(images)
    height, width, channels = image_shape
    if images.ndim == 2:
        if images.shape[1] != height * width * channels:
            raise ValueError(f"flat images must have {height * width * channels} values for "
                             f"image_shape {image_shape}, got shape {images.shape}")
        return images.reshape(-1, height, width, channels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (height, width, channels):
        raise ValueError(f"images must have shape (n, {height * width * channels}) or "
                         f"(n, {height}, {width}[, {channels}]), got {images.shape}")
    return images


def _first_padding(image_shape) -> int:
    # The reference pads the first convolution by 3 on single-channel
    # (28x28) images and by 1 otherwise.
    return 3 if image_shape[2] == 1 else 1


def feature_shape(image_shape=(28, 28, 1), *, width: int = 128, depth: int = 3):
    """Shape ``(H, W, width)`` of the last block's output.

    Args:
      image_shape: ``(height, width, channels)`` of the input images.
      width: channels of every convolution.
      depth: number of blocks.

    Returns:
      The ``(height, width, channels)`` of the feature maps the linear layer reads.
    """
    height, width_px, _ = image_shape
    padding = _first_padding(image_shape)
    height, width_px = height + 2 * padding - 2, width_px + 2 * padding - 2
    for _ in range(depth):
        height, width_px = height // 2, width_px // 2
    return height, width_px, width


def init_convnet(key, *, image_shape=(28, 28, 1), width: int = 128, depth: int = 3,
                 num_classes: int = 10) -> dict:
    """Fresh weights of the benchmarks' ConvNet.

    Convolutions and the linear layer are drawn as PyTorch draws them
    (uniform in ``+-1 / sqrt(fan_in)``, weights and biases alike); the
    normalizations start as the identity (scale 1, offset 0).

    Args:
      key: a JAX PRNG key.
      image_shape: ``(height, width, channels)`` of the images.
      width: channels of every convolution (128 in the benchmarks).
      depth: number of convolution blocks (3 in the benchmarks).
      num_classes: outputs of the linear layer.

    Returns:
      ``{"blocks": [{"kernel": (3, 3, in, width), "bias": (width,), "scale":
      (width,), "offset": (width,)}, ...], "head": {"weight": (features,
      num_classes), "bias": (num_classes,)}}`` in float32.

    Raises:
      ValueError: when ``width``, ``depth`` or ``num_classes`` is below 1, or
        the images are too small for ``depth`` poolings.
    """
    for name, value in (("width", width), ("depth", depth), ("num_classes", num_classes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    height, width_px, features = feature_shape(image_shape, width=width, depth=depth)
    if height < 1 or width_px < 1:
        raise ValueError(f"images of shape {tuple(image_shape)} are too small for {depth} "
                         f"poolings")
    keys = jax.random.split(key, 2 * depth + 2)
    blocks = []
    in_channels = image_shape[2]
    for layer in range(depth):
        bound = 1.0 / jnp.sqrt(9.0 * in_channels)
        blocks.append({
            "kernel": jax.random.uniform(keys[2 * layer], (3, 3, in_channels, width),
                                         minval=-bound, maxval=bound),
            "bias": jax.random.uniform(keys[2 * layer + 1], (width,), minval=-bound,
                                       maxval=bound),
            "scale": jnp.ones(width),
            "offset": jnp.zeros(width),
        })
        in_channels = width
    fan_in = height * width_px * features
    bound = 1.0 / jnp.sqrt(float(fan_in))
    head = {"weight": jax.random.uniform(keys[-2], (fan_in, num_classes), minval=-bound,
                                         maxval=bound),
            "bias": jax.random.uniform(keys[-1], (num_classes,), minval=-bound, maxval=bound)}
    return {"blocks": blocks, "head": head}


def _shifted_windows(x, padding: int, out_height: int, out_width: int):
    """The nine ``(n * out_height * out_width, channels)`` views of ``x`` a 3x3 kernel reads."""
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    return [padded[:, i:i + out_height, j:j + out_width, :].reshape(-1, x.shape[3])
            for i in range(3) for j in range(3)]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv3x3(x, kernel, padding: int):
    """A 3x3 convolution, stride 1: ``(n, H, W, in) * (3, 3, in, out) -> (n, H', W', out)``.

    XLA's convolution, with one change to how it is differentiated: the
    derivative with respect to the kernel is written as nine matrix products
    of shifted windows of ``x``. Reverse mode transposes them into the
    kernel's gradient, which on CPU is several times faster than XLA's own
    gradient convolution (ten times on the first layer, whose input has one
    channel). Values and derivatives are those of the plain convolution; the
    rule is a ``custom_jvp``, so forward mode, reverse mode and their
    compositions (Hessian-vector products) all work.

    Args:
      x: (n, H, W, in) images or feature maps.
      kernel: (3, 3, in, out) weights.
      padding: zeros added on each side of both spatial axes.

    Returns:
      (n, H + 2 * padding - 2, W + 2 * padding - 2, out) output maps.
    """
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1),
                                        padding=((padding, padding), (padding, padding)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@conv3x3.defjvp
def _conv3x3_jvp(padding, primals, tangents):
    x, kernel = primals
    x_dot, kernel_dot = tangents
    out = conv3x3(x, kernel, padding)
    out_dot = conv3x3(x_dot, kernel, padding)  # linear in x: XLA's transposed convolution
    windows = _shifted_windows(x, padding, out.shape[1], out.shape[2])
    kernel_dot = kernel_dot.reshape(9, x.shape[3], -1)
    out_dot += sum(window @ kernel_dot[index] for index, window in enumerate(windows)
                   ).reshape(out.shape)
    return out, out_dot


def _instance_norm(x, scale, offset):
    # Each image's each channel to zero mean and unit variance over its pixels.
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + NORM_EPSILON) * scale + offset


def _average_pool(x):
    n, height, width, channels = x.shape
    x = x[:, :height // 2 * 2, :width // 2 * 2]
    return x.reshape(n, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def convnet_features(params: dict, images, *, image_shape=(28, 28, 1)) -> jax.Array:
    """What the linear layer reads: the flattened output of the last block.

    Args:
      params: the weights, as :func:`init_convnet` lays them out.
      images: ``(n, H*W*C)`` flat images (as the datasets store them), or
        ``(n, H, W)`` / ``(n, H, W, C)``.
      image_shape: ``(height, width, channels)`` of one image.

    Returns:
      (n, features) float array (2,048 features at width 128 on 28x28 images).

    Raises:
      ValueError: when ``images`` does not match ``image_shape``.
    """
    x = _as_nhwc(images, tuple(image_shape))
    for layer, block in enumerate(params["blocks"]):
        padding = _first_padding(image_shape) if layer == 0 else 1
        x = conv3x3(x, block["kernel"].astype(x.dtype), padding) + block["bias"]
        x = jax.nn.relu(_instance_norm(x, block["scale"], block["offset"]))
        x = _average_pool(x)
    return x.reshape(x.shape[0], -1)


def convnet_logits(params: dict, images, *, image_shape=(28, 28, 1)) -> jax.Array:
    """The ConvNet's class scores.

    Args:
      params: the weights, as :func:`init_convnet` lays them out.
      images: ``(n, H*W*C)`` flat images, or ``(n, H, W)`` / ``(n, H, W, C)``.
      image_shape: ``(height, width, channels)`` of one image.

    Returns:
      (n, num_classes) logits.

    Raises:
      ValueError: when ``images`` does not match ``image_shape``.
    """
    features = convnet_features(params, images, image_shape=image_shape)
    return features @ params["head"]["weight"] + params["head"]["bias"]
