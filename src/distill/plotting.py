"""Figures used across the chapters."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distill.data import IMAGE_SHAPE


def _image_grid(images, labels, class_names, *, ncols: int, scale: float, title: str | None,
                draw):
    """One panel per image, ``draw(ax, image)`` in each, titled with its class."""
    images = np.asarray(images)
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
    """The original notebook's figure: each image divided by its largest
    absolute value, shown with ``gray_r`` from -1 (white) to 1 (black)."""

    def draw(ax, image):
        peak = np.abs(image).max()
        ax.imshow(image / (peak if peak > 0 else 1.0), cmap="gray_r", vmin=-1, vmax=1)

    return _image_grid(images, labels, class_names, ncols=ncols, scale=scale, title=title,
                       draw=draw)


def plot_real_images(images, labels=None, class_names=None, *, ncols: int = 10,
                     title: str | None = None, scale: float = 1.2):
    """Real images as they are: pixel values 0 (white) to 1 (black)."""

    def draw(ax, image):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)

    return _image_grid(images, labels, class_names, ncols=ncols, scale=scale, title=title,
                       draw=draw)


def plot_curve(values, *, xlabel: str, ylabel: str, title: str | None = None,
               logy: bool = False, ax=None, **line_options):
    """A single curve (loss or gradient norm against iterations)."""
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
