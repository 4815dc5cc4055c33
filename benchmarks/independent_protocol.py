"""Score a distilled set by the field's protocol, with code independent of the helper.

The targets of Part III are checked on the command line's saved set by code
that shares nothing with ``distill.convnet``, ``distill.augment`` or
``distill.protocol``: this script reads the ``.npz`` with NumPy, the data
with TFDS (through ``distill.data`` only for the offline files), and builds
the ConvNet, its initialization, the augmentation and the training loop in
TensorFlow/Keras, which the project already installs for TFDS.

The protocol (DC, Zhao et al. 2021): the benchmarks' ConvNet (3 blocks of a
3x3 convolution of width 128 -- the first padded by 3 on 28x28 images --,
instance norm, ReLU, 2x2 average pooling; then one linear layer), PyTorch's
initialization, SGD with momentum 0.9 and weight decay 5e-4 on every
weight, learning rate 0.01 for the first half of 300 epochs and 0.001 for
the second (momentum restarted), batches of 256, cross-entropy against the
labels (classes or rows of probabilities), images standardized with the
real training pixels' mean and deviation; with augmentation, each image of
each batch gets one random shift (up to 4 pixels), scale (each side by up
to 20%) or rotation (up to 45 degrees), as one affine warp.

Usage::

    python benchmarks/independent_protocol.py SET.npz [--dataset mnist] [--seeds 5]
        [--epochs 300] [--no-augment] [--json OUT.json]

Prints each network's test accuracy and their mean and standard deviation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf


def pytorch_uniform(fan_in: int):
    """PyTorch's default initialization of conv and linear layers: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return tf.keras.initializers.RandomUniform(-bound, bound)


def build_convnet(width: int = 128, depth: int = 3, num_classes: int = 10,
                  image_shape=(28, 28, 1)) -> tf.keras.Model:
    """The benchmarks' ConvNet in Keras, initialized as PyTorch initializes it."""
    inputs = tf.keras.Input(shape=image_shape)
    x = tf.keras.layers.ZeroPadding2D(3 if image_shape[2] == 1 else 1)(inputs)
    channels = image_shape[2]
    for block in range(depth):
        fan_in = 9 * channels
        x = tf.keras.layers.Conv2D(
            width, 3, padding="valid" if block == 0 else "same",
            kernel_initializer=pytorch_uniform(fan_in), bias_initializer=pytorch_uniform(fan_in))(x)
        # Instance norm with a learned scale and offset: a group norm with one
        # channel per group, as the reference implementation builds it.
        x = tf.keras.layers.GroupNormalization(groups=width, epsilon=1e-5)(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.AveragePooling2D(2)(x)
        channels = width
    x = tf.keras.layers.Flatten()(x)
    fan_in = int(x.shape[-1])
    outputs = tf.keras.layers.Dense(num_classes, kernel_initializer=pytorch_uniform(fan_in),
                                    bias_initializer=pytorch_uniform(fan_in))(x)
    return tf.keras.Model(inputs, outputs)


def augment(images, generator, crop=4, scale=0.2, rotate=45.0):
    """One random shift, scale or rotation per image, as a projective warp filled with the mean."""
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    kind = generator.uniform([n], 0, 3, dtype=tf.int32)
    shift = tf.cast(generator.uniform([n, 2], -crop, crop, dtype=tf.int32), tf.float32)
    factors = generator.uniform([n, 2], 1 - scale, 1 + scale)
    angle = tf.cast(generator.uniform([n], -int(rotate), int(rotate), dtype=tf.int32),
                    tf.float32) * (math.pi / 180)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    one, zero = tf.ones([n]), tf.zeros([n])
    # Each warp maps an output pixel (x, y) to the input pixel it reads.
    shifted = [one, zero, -shift[:, 1], zero, one, -shift[:, 0]]
    sx, sy = 1 / factors[:, 1], 1 / factors[:, 0]
    scaled = [sx, zero, cx - sx * cx, zero, sy, cy - sy * cy]
    cos, sin = tf.cos(angle), tf.sin(angle)
    rotated = [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy]
    rows = [tf.where(kind == 0, a, tf.where(kind == 1, b, c))
            for a, b, c in zip(shifted, scaled, rotated)]
    transforms = tf.stack(rows + [zero, zero], axis=1)
    fill = tf.reduce_mean(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[height, width],
        fill_value=fill, interpolation="BILINEAR", fill_mode="CONSTANT")


def train_and_test(images, targets, test_images, test_labels, *, seed: int, epochs: int,
                   augmented: bool, batch_size: int = 256, learning_rate: float = 0.01,
                   momentum: float = 0.9, weight_decay: float = 5e-4) -> float:
    """Train one ConvNet from scratch on (images, targets) by the protocol; its test accuracy."""
    tf.keras.utils.set_random_seed(seed)
    model = build_convnet(num_classes=targets.shape[1], image_shape=images.shape[1:])
    generator = tf.random.Generator.from_seed(seed)
    images = tf.constant(images)
    targets = tf.constant(targets)

    def make_step(optimizer):
        @tf.function(reduce_retracing=True)
        def step(batch, batch_targets):
            if augmented:
                batch = augment(batch, generator)
            with tf.GradientTape() as tape:
                logits = model(batch, training=True)
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(batch_targets,
                                                                               logits))
            gradients = tape.gradient(loss, model.trainable_variables)
            # PyTorch's weight decay: added to the gradient of every weight.
            gradients = [g + weight_decay * v for g, v in zip(gradients, model.trainable_variables)]
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss
        return step

    count = int(images.shape[0])
    for rate, phase_epochs in ((learning_rate, epochs // 2), (learning_rate / 10,
                                                             epochs - epochs // 2)):
        step = make_step(tf.keras.optimizers.SGD(rate, momentum=momentum))  # restarted
        for _ in range(phase_epochs):
            order = tf.random.shuffle(tf.range(count), seed=int(generator.uniform_full_int([])))
            for start in range(0, count, batch_size):
                rows = order[start:start + batch_size]
                loss = step(tf.gather(images, rows), tf.gather(targets, rows))
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"the training loss became {float(loss)}")
    predict = tf.function(lambda batch: tf.argmax(model(batch, training=False), axis=1))
    predictions = np.concatenate([predict(test_images[start:start + 500]).numpy()
                                  for start in range(0, len(test_images), 500)])
    return float(np.mean(predictions == test_labels))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a distilled set (.npz with images and labels)")
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist"],
                        help="the real data (default: the one the file's config names)")
    parser.add_argument("--seeds", type=int, default=5, help="networks trained (seeds 0..N-1)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--json", help="also write the accuracies here")
    args = parser.parse_args(argv)

    with np.load(args.path) as stored:
        images = np.asarray(stored["images"], np.float32)
        labels = np.asarray(stored["labels"])
        config = json.loads(str(stored["config"])) if "config" in stored.files else {}
    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        parser.error("the file names no dataset: pass --dataset")
    from distill import data  # the real images only (TFDS, or the offline files)

    real = data.load_dataset(dataset)
    mean, std = float(real.train.images.mean()), float(real.train.images.std())
    side = int(math.isqrt(images.shape[1]))
    images = ((images - mean) / std).reshape(-1, side, side, 1)
    targets = (np.eye(10, dtype=np.float32)[labels] if labels.ndim == 1
               else labels.astype(np.float32))
    test_images = ((real.test.images - mean) / std).reshape(-1, side, side, 1).astype(np.float32)
    print(f"{args.path}: {len(images)} images, {'hard' if labels.ndim == 1 else 'soft'} labels, "
          f"{dataset}; Keras, {args.epochs} epochs, "
          f"{'without' if args.no_augment else 'with'} augmentation", flush=True)
    accuracies = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        accuracies.append(train_and_test(images, targets, test_images, real.test.labels,
                                         seed=seed, epochs=args.epochs,
                                         augmented=not args.no_augment))
        print(f"network {seed}: {accuracies[-1]:.2%}", flush=True)
    accuracies = np.array(accuracies)
    spread = accuracies.std(ddof=1) if len(accuracies) > 1 else 0.0
    print(f"independent protocol: {accuracies.mean():.2%} +- {spread:.2%} "
          f"({len(accuracies)} networks, {time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"path": args.path, "dataset": dataset, "epochs": args.epochs,
                       "augment": not args.no_augment, "accuracies": accuracies.tolist()},
                      file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
