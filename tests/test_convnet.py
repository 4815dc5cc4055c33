"""The benchmarks' ConvNet and its convolution's differentiation rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import convnet


def _plain_conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((padding, padding), (padding, padding)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_the_benchmark_network_has_2048_features_and_ten_outputs_on_mnist_images():
    params = convnet.init_convnet(jax.random.PRNGKey(0))
    assert [block["kernel"].shape for block in params["blocks"]] == [
        (3, 3, 1, 128), (3, 3, 128, 128), (3, 3, 128, 128)]
    assert params["head"]["weight"].shape == (2048, 10)
    assert convnet.feature_shape() == (4, 4, 128)
    images = jax.random.uniform(jax.random.PRNGKey(1), (3, 784))
    assert convnet.convnet_features(params, images).shape == (3, 2048)
    logits = convnet.convnet_logits(params, images)
    assert logits.shape == (3, 10) and bool(jnp.all(jnp.isfinite(logits)))
    # Flat and square images are the same images.
    np.testing.assert_array_equal(logits, convnet.convnet_logits(params, images.reshape(3, 28, 28)))


def test_weights_are_drawn_within_pytorch_bounds_and_differ_between_keys():
    params = convnet.init_convnet(jax.random.PRNGKey(0), width=16)
    for block, fan_in in zip(params["blocks"], (9 * 1, 9 * 16, 9 * 16)):
        for name in ("kernel", "bias"):
            assert float(jnp.max(jnp.abs(block[name]))) <= 1 / np.sqrt(fan_in)
        np.testing.assert_array_equal(block["scale"], 1.0)
        np.testing.assert_array_equal(block["offset"], 0.0)
    other = convnet.init_convnet(jax.random.PRNGKey(1), width=16)
    assert not np.allclose(params["blocks"][1]["kernel"], other["blocks"][1]["kernel"])


@pytest.mark.parametrize("options, message", [
    (dict(width=0), "width.*0"),
    (dict(depth=2.5), "depth.*2.5"),
    (dict(depth=6), r"too small for 6 poolings"),
])
def test_bad_shapes_are_refused_naming_the_setting(options, message):
    with pytest.raises(ValueError, match=message):
        convnet.init_convnet(jax.random.PRNGKey(0), **options)


def test_images_of_the_wrong_size_are_refused_with_their_shape():
    params = convnet.init_convnet(jax.random.PRNGKey(0), width=4)
    with pytest.raises(ValueError, match=r"784.*\(2, 100\)"):
        convnet.convnet_logits(params, jnp.zeros((2, 100)))


@pytest.mark.parametrize("in_channels, padding, size", [(1, 3, 28), (5, 1, 8)])
def test_the_convolution_differentiates_exactly_as_xla_does(x64, in_channels, padding, size):
    """Its custom rule changes how the kernel's derivative is computed, not its value:
    gradients, forward-mode derivatives and Hessian-vector products agree in float64."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (2, size, size, in_channels), jnp.float64)
    kernel = jax.random.normal(keys[1], (3, 3, in_channels, 4), jnp.float64)
    x_dot = jax.random.normal(keys[2], x.shape, jnp.float64)
    kernel_dot = jax.random.normal(keys[3], kernel.shape, jnp.float64)

    def loss(conv):
        return lambda x, kernel: jnp.sum(jnp.tanh(conv(x, kernel, padding)) ** 2)

    custom, plain = loss(convnet.conv3x3), loss(_plain_conv)
    np.testing.assert_allclose(convnet.conv3x3(x, kernel, padding), _plain_conv(x, kernel, padding),
                               rtol=1e-12, atol=1e-12)
    for ours, reference in zip(jax.grad(custom, (0, 1))(x, kernel),
                               jax.grad(plain, (0, 1))(x, kernel)):
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(jax.jvp(custom, (x, kernel), (x_dot, kernel_dot))[1],
                               jax.jvp(plain, (x, kernel), (x_dot, kernel_dot))[1], rtol=1e-10)

    def hvp(f):  # forward over reverse, in the kernel
        return jax.jvp(jax.grad(f, 1), (x, kernel), (jnp.zeros_like(x), kernel_dot))[1]

    np.testing.assert_allclose(hvp(custom), hvp(plain), rtol=1e-9, atol=1e-9)
