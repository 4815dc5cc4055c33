"""Figures used across the chapters."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distill import checks
from distill.data import IMAGE_SHAPE, NUM_FEATURES


def _image_grid(images, labels, class_names, *, ncols: int, scale: float, title: str | None,
                draw):
    """One panel per image, ``draw(ax, image)`` in each, titled with its class."""
    images = checks.images(images, "images", num_features=NUM_FEATURES)
    if ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols}")
    if labels is not None and np.ndim(labels) == 2:
        labels = np.argmax(labels, axis=1)  # soft labels: title the most likely class
    if labels is not None:
        num_classes = len(class_names) if class_names else int(np.max(labels)) + 1
        checks.labels(np.asarray(labels), "labels", num_classes=max(num_classes, 1),
                      count=len(images), soft=False)
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks(())
        ax.set_yticks(())
        if index >= len(images):
            ax.set_visible(False)
            continue
        draw(ax, images[index].reshape(IMAGE_SHAPE))
        if labels is not None:
            label = int(labels[index])
            ax.set_title(class_names[label] if class_names else str(label), fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_distilled_images(images, labels=None, class_names=None, *, ncols: int = 5,
                          title: str = "Distilled images", scale: float = 1.8):
    """Distilled images as the original notebook shows them, one panel each.

    Each image is divided by its largest absolute value and shown with
    ``gray_r`` from -1 (white) to 1 (black): distilled pixels leave [0, 1].

    Args:
      images: (k, 784) finite floating-point images.
      labels: (k,) integer classes, or (k, num_classes) soft labels (each
        panel is then titled with the most likely class); no titles when None.
      class_names: the name of each class, for the titles; the class number
        when None.
      ncols: panels per row.
      title: the figure's title (None or empty: none).
      scale: inches per panel.

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: for images that are not a finite float (k, 784) array, a
        non-positive ``ncols``, or labels out of range or not one per image.
    """

    def draw(ax, image):
        peak = np.abs(image).max()
        ax.imshow(image / (peak if peak > 0 else 1.0), cmap="gray_r", vmin=-1, vmax=1)

    return _image_grid(images, labels, class_names, ncols=ncols, scale=scale, title=title,
                       draw=draw)


def plot_real_images(images, labels=None, class_names=None, *, ncols: int = 10,
                     title: str | None = None, scale: float = 1.2):
    """Real images as they are, one panel each: pixel values 0 (white) to 1 (black).

    Args:
      images: (n, 784) finite floating-point images in [0, 1].
      labels: (n,) integer classes, or (n, num_classes) soft labels; no
        titles when None.
      class_names: the name of each class, for the titles; the class number
        when None.
      ncols: panels per row.
      title: the figure's title, or None.
      scale: inches per panel.

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: as :func:`plot_distilled_images`.
    """

    def draw(ax, image):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)

    return _image_grid(images, labels, class_names, ncols=ncols, scale=scale, title=title,
                       draw=draw)


def plot_curve(values, *, xlabel: str, ylabel: str, title: str | None = None,
               logy: bool = False, ax=None, **line_options):
    """A single curve (loss or gradient norm against iterations).

    Args:
      values: (n,) values, plotted against ``0..n-1``.
      xlabel: the x axis label.
      ylabel: the y axis label.
      title: the axes' title, or None.
      logy: use a logarithmic y axis.
      ax: the matplotlib ``Axes`` to draw on; a new figure when None.
      **line_options: passed to ``ax.plot`` (e.g. ``label``, ``color``).

    Returns:
      The ``Axes`` drawn on.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(len(values)), values, **line_options)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


def plot_confusion_matrix(counts, class_names=None, *, title: str | None = None, ax=None):
    """A confusion matrix as a heat map, each row normalized to sum to 1 (100%).

    Rows: true class; columns: predicted class. Each cell of at least 0.5%
    is labeled with its percentage.

    Args:
      counts: (num_classes, num_classes) counts, as
        :func:`distill.evaluate.confusion_matrix` returns them.
      class_names: the name of each class, for the ticks; class numbers when
        None.
      title: the axes' title, or None.
      ax: the matplotlib ``Axes`` to draw on; a new figure when None.

    Returns:
      The ``Axes`` drawn on.

    Raises:
      ValueError: when ``counts`` is not a square 2-D array.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    shares = counts / np.where(rows > 0, rows, 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5))
    image = ax.imshow(100 * shares, cmap="Blues", vmin=0, vmax=100)
    num_classes = len(counts)
    names = class_names or [str(c) for c in range(num_classes)]
    ax.set_xticks(range(num_classes), names, rotation=90 if class_names else 0)
    ax.set_yticks(range(num_classes), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(num_classes):
        for j in range(num_classes):
            if shares[i, j] >= 0.005:
                ax.text(j, i, f"{100 * shares[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, label="share of the true class (%)")
    if title:
        ax.set_title(title)
    return ax
