"""Input checks shared by the helper: refuse nonsense loudly, naming the argument.

A tutorial's helper must never turn bad input into a plausible but wrong
number: integer pixels that were never divided by 255, a label 10 among ten
classes, a NaN that poisons the outer loss 40 steps later. Each check here
raises ``ValueError`` with the argument's name, what was expected and what
was given, and returns the input as a NumPy array when it passes.
"""

from __future__ import annotations

import numpy as np


def images(value, name: str = "images", *, num_features: int | None = None,
           count: int | None = None) -> np.ndarray:
    """Check that ``value`` is a finite floating-point ``(n, num_features)`` array.

    Args:
      value: the images, anything ``np.asarray`` accepts (NumPy or JAX).
      name: the argument's name, for the error messages.
      num_features: the pixels each image must have; any number when None.
      count: the number of images there must be; any number when None.

    Returns:
      ``np.asarray(value)``, unchanged (dtype included).

    Raises:
      ValueError: when the array is not 2-D, not floating point (with a hint
        for uint8 pixels), has the wrong number of pixels or images, is empty,
        or holds NaN or infinite values.
    """
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, pixels), got shape {array.shape}")
    # The name test admits JAX's bfloat16, which NumPy does not class as floating.
    if not (np.issubdtype(array.dtype, np.floating) or "float" in array.dtype.name):
        hint = " (divide uint8 pixels by 255)" if array.dtype == np.uint8 else ""
        raise ValueError(f"{name} must be floating point{hint}, got dtype {array.dtype}")
    if num_features is not None and array.shape[1] != num_features:
        raise ValueError(f"{name} must have {num_features} pixels per image, got shape "
                         f"{array.shape}")
    if count is not None and len(array) != count:
        raise ValueError(f"{name} must hold {count} images, got {len(array)}")
    if array.size == 0:
        raise ValueError(f"{name} is empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contain NaN or infinite values ({bad} of {array.size})")
    return array


def labels(value, name: str = "labels", *, num_classes: int, count: int | None = None,
           soft: bool = True, images_name: str = "images") -> np.ndarray:
    """Check that ``value`` is a valid set of labels, hard or soft.

    Hard labels are integer classes ``(n,)`` in ``0..num_classes-1``; soft
    labels (accepted when ``soft``) are ``(n, num_classes)`` floating-point
    rows of probabilities: finite, non-negative, each summing to 1 (within
    1e-3).

    Args:
      value: the labels, anything ``np.asarray`` accepts.
      name: the argument's name, for the error messages.
      num_classes: the number of classes (a positive integer).
      count: the number of images they label; any number when None.
      soft: accept ``(n, num_classes)`` soft labels too.
      images_name: how the error message names those images.

    Returns:
      ``np.asarray(value)``, unchanged.

    Raises:
      ValueError: naming ``name`` for the wrong shape or dtype, a class out of
        range, soft labels that are not probabilities, or a count that differs
        from ``count``; naming ``num_classes`` when it is not a positive integer.
    """
    num_classes = positive_int(num_classes, "num_classes")
    array = np.asarray(value)
    if array.ndim == 1:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"integer {name} expected, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            outside = np.unique(array[(array < 0) | (array >= num_classes)])
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got values "
                             f"{array.min()}..{array.max()} (outside: "
                             f"{', '.join(map(str, outside[:5]))})")
    elif array.ndim == 2 and soft:
        if array.shape[1] != num_classes or not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"soft {name} must be a floating-point (n, {num_classes}) array, "
                             f"got shape {array.shape} and dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"soft {name} contain NaN or infinite values")
        if array.min() < 0 or not np.allclose(array.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError(f"soft {name} must be probabilities: non-negative rows that sum "
                             f"to 1 (row sums {array.sum(axis=1).min():.4g}.."
                             f"{array.sum(axis=1).max():.4g}, smallest entry {array.min():.4g})")
    else:
        shapes = f"(n,) or (n, {num_classes})" if soft else "(n,)"
        raise ValueError(f"{name} must have shape {shapes}, got shape {array.shape}")
    if count is not None and len(array) != count:
        raise ValueError(f"{count} {images_name} but {len(array)} {name}")
    return array


def positive_number(value, name: str) -> float:
    """Check that ``value`` is a positive finite number (an L2 strength, a tolerance, a rate).

    Args:
      value: a Python, NumPy or JAX number, or a one-element array; not a
        bool, a string or None.
      name: the argument's name, for the error message.

    Returns:
      The number as a Python ``float``.

    Raises:
      ValueError: when ``value`` is not a number, holds more than one, or is
        not positive and finite.
    """
    try:
        if isinstance(value, (bool, str, bytes)) or value is None:
            raise TypeError
        array = np.asarray(value, dtype=np.float64)  # Python, NumPy and JAX numbers
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if array.size != 1:
        raise ValueError(f"{name} must be a single number, got shape {array.shape}")
    number = float(array.reshape(()))
    if not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {number}")
    return number


def positive_int(value, name: str) -> int:
    """Check that ``value`` is a positive integer (Python or NumPy, not a bool).

    Args:
      value: the number to check.
      name: the argument's name, for the error message.

    Returns:
      The number as a Python ``int``.

    Raises:
      ValueError: when ``value`` is not an integer or is below 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def images_per_class(num_images, num_classes: int = 10) -> int:
    """How many images each class gets when ``num_images`` are shared among ``num_classes``.

    They must divide evenly, or classes would be unequal.

    Args:
      num_images: the total number of images (a positive integer).
      num_classes: the number of classes (a positive integer).

    Returns:
      ``num_images // num_classes``.

    Raises:
      ValueError: when either is not a positive integer, or when
        ``num_classes`` does not divide ``num_images`` (the message suggests
        the nearest multiples).
    """
    num_images = positive_int(num_images, "the number of images")
    num_classes = positive_int(num_classes, "num_classes")
    if num_images % num_classes:
        lower = num_images - num_images % num_classes
        choices = " or ".join(str(n) for n in (lower, lower + num_classes) if n > 0)
        raise ValueError(f"{num_images} images cannot be split evenly among {num_classes} "
                         f"classes: use a multiple of {num_classes} (e.g. {choices})")
    return num_images // num_classes
