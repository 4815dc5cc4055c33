"""The distilled set on disk: a ``.npz`` anyone can read with plain NumPy.

Arrays:
  ``images``        (k, 784) float32, on the pixel scale of the data ([0, 1] for real images)
  ``labels``        (k,) integers, or (k, num_classes) soft targets
  ``l2reg``         scalar: the inner regularization to train the evaluation model with
  ``loss_history``  float64: the outer loss before the first step and after each, (steps + 1,);
                    for a set distilled for a network, the loss on each step's real batch, (steps,)
  ``config``        a JSON string: ``{"dataset": ..., "distill": {DistillConfig's fields}}``,
                    or ``{"dataset": ..., "network": {NetworkConfig's fields}}`` for a set
                    distilled for a network

Only the first three are needed to use a set; the last two, written by the
command line, let a run be resumed (:func:`load_for_resume`). Files written
before the configuration was JSON (a Python dict literal with the dataset
among the fields) are still read.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from distill import checks
from distill.atomic import write_atomically
from distill.config import DistillConfig, NetworkConfig

#: Settings a resumed run may change; any other difference from the saved
#: run's configuration is refused.
RESUMABLE_CHANGES = ("steps", "seed", "implicit_diff")


@dataclasses.dataclass(frozen=True)
class DistilledSet:
    """A distilled set as read from disk.

    Attributes:
      images: (k, num_features) float32.
      labels: (k,) integers, or (k, num_classes) soft labels.
      l2reg: the L2 strength to train the evaluation model with.
      loss_history: the outer losses of the run that made it, or None.
      config: that run's :class:`~distill.config.DistillConfig` (or
        :class:`~distill.config.NetworkConfig`), or None.
      dataset: the dataset it was distilled from, or None.
    """

    images: np.ndarray
    labels: np.ndarray
    l2reg: float
    loss_history: np.ndarray | None = None
    config: DistillConfig | NetworkConfig | None = None
    dataset: str | None = None


def validate(images, labels, l2reg, *, num_classes: int = 10) -> DistilledSet:
    """Check shapes, dtypes and values.

    Args:
      images: (k, num_features) floating-point images.
      labels: (k,) integer classes, or (k, num_classes) soft labels.
      l2reg: the inner problem's positive ``l2reg``.
      num_classes: the number of classes.

    Returns:
      A :class:`DistilledSet` of float32 images, the labels and a float ``l2reg``.

    Raises:
      ValueError: naming the array that is wrong.
    """
    images = checks.images(images, "images")
    labels = checks.labels(labels, "labels", num_classes=num_classes, count=len(images))
    l2reg = checks.positive_number(l2reg, "l2reg")
    return DistilledSet(images=images.astype(np.float32), labels=labels, l2reg=l2reg)


def save_distilled(path, images, labels, l2reg, *, loss_history=None,
                   config: DistillConfig | NetworkConfig | None = None,
                   dataset: str | None = None) -> Path:
    """Write a distilled set atomically (:func:`distill.atomic.write_atomically`).

    A crash or a kill during the write leaves the previous ``path`` (if any)
    untouched: readers see either the old file or the new one.

    Args:
      path: the ``.npz`` to write; folders are created.
      images, labels, l2reg: the set (checked by :func:`validate`).
      loss_history: the run's outer losses, stored when given.
      config, dataset: the run's configuration and dataset, stored (as JSON)
        when ``config`` is given, so that the run can be resumed.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
    """
    distilled = validate(images, labels, l2reg)
    arrays = {"images": distilled.images, "labels": distilled.labels,
              "l2reg": np.float32(distilled.l2reg)}
    if loss_history is not None:
        arrays["loss_history"] = np.asarray(loss_history, np.float64)
    if config is not None:
        kind = "network" if isinstance(config, NetworkConfig) else "distill"
        arrays["config"] = np.array(json.dumps({"dataset": dataset, kind: config.to_dict()}))
    return write_atomically(path, lambda file: np.savez(file, **arrays))


def load_distilled(path) -> DistilledSet:
    """Read and validate a distilled set written by :func:`save_distilled`.

    Args:
      path: the ``.npz`` file.

    Returns:
      A :class:`DistilledSet`; ``loss_history``, ``config`` and ``dataset``
      are None when the file does not hold them.

    Raises:
      FileNotFoundError: when ``path`` does not exist.
      ValueError: when it is not a readable ``.npz``, lacks an array, holds
        invalid values, or its configuration is unreadable; the message says which.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            contents = {name: arrays[name] for name in arrays.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        # ValueError: not a zip archive at all (NumPy then takes it for a pickle).
        raise ValueError(f"{path} is not a readable .npz file ({error})") from error
    missing = {"images", "labels", "l2reg"} - set(contents)
    if missing:
        raise ValueError(f"{path} is not a distilled set: it lacks {sorted(missing)}")
    distilled = validate(contents["images"], contents["labels"], contents["l2reg"])
    history = contents.get("loss_history")
    if history is not None:
        history = np.asarray(history, np.float64).ravel()
    config, dataset = None, None
    if "config" in contents:
        try:
            config, dataset = _read_config(str(contents["config"]))
        except ValueError as error:
            raise ValueError(f"{path}: its stored configuration is unreadable ({error})") \
                from None
    return dataclasses.replace(distilled, loss_history=history, config=config, dataset=dataset)


def _read_config(text: str) -> tuple[DistillConfig | NetworkConfig, str | None]:
    """The configuration and dataset stored as JSON, or as the older dict literal."""
    try:
        stored = json.loads(text)
        if isinstance(stored, dict) and isinstance(stored.get("network"), dict):
            return NetworkConfig.from_dict(stored["network"]), stored.get("dataset")
        fields, dataset = stored["distill"], stored.get("dataset")
    except (json.JSONDecodeError, TypeError, KeyError):
        try:  # before JSON: repr(dataclasses.asdict(config)), the dataset among the fields
            fields = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"neither JSON nor a dict literal: {text[:80]!r}") from None
        if not isinstance(fields, dict):
            raise ValueError(f"not a dict: {text[:80]!r}") from None
        fields = dict(fields)
        dataset = fields.pop("dataset", None)
    if not isinstance(fields, dict):
        raise ValueError(f"not a dict: {text[:80]!r}")
    return DistillConfig.from_dict(fields), dataset


def load_for_resume(path, config: DistillConfig | NetworkConfig, dataset: str, *,
                    num_classes: int = 10, num_features: int = 784) -> DistilledSet:
    """A set saved by the command line, checked to continue a run of ``config`` on ``dataset``.

    Args:
      path: the ``.npz`` to resume.
      config: the configuration of the run that continues it; only
        ``RESUMABLE_CHANGES`` (``steps``, ``seed``, ``implicit_diff``) may differ
        from the saved one.
      dataset: the dataset of that run.
      num_classes, num_features: the data's shape.

    Returns:
      The :class:`DistilledSet`, with its ``loss_history``.

    Raises:
      FileNotFoundError: when ``path`` does not exist.
      ValueError: saying what does not match or is missing: the shape, the
        labels, ``l2reg``, the dataset, a setting, or a loss history or
        configuration (a file not written by the command line).
    """
    saved = load_distilled(path)
    if saved.config is not None and type(saved.config) is not type(config):
        made_for = {DistillConfig: "linear", NetworkConfig: "convnet"}
        raise ValueError(f"it was distilled with --model {made_for[type(saved.config)]}, "
                         f"not --model {made_for[type(config)]}")
    labels = np.repeat(np.arange(num_classes), config.images_per_class)
    expected_shape = (len(labels), num_features)
    if saved.images.shape != expected_shape:
        raise ValueError(f"it holds images of shape {saved.images.shape}, but "
                         f"--images-per-class {config.images_per_class} on {dataset} "
                         f"needs {expected_shape}")
    if saved.labels.ndim == 2 and not config.learn_labels:
        raise ValueError("it holds learned soft labels: resume it with --learn-labels")
    hard = saved.labels if saved.labels.ndim == 1 else saved.labels.argmax(axis=1)
    if not (hard == labels).all():
        raise ValueError("its labels are not those of this configuration")
    if not config.learn_l2reg and abs(saved.l2reg - config.l2reg) > 1e-6 * config.l2reg:
        raise ValueError(f"it was distilled with l2reg {saved.l2reg:g}, this run uses "
                         f"{config.l2reg:g} (resume a run that learned l2reg with "
                         "--learn-l2reg)")
    if saved.loss_history is None or len(saved.loss_history) == 0 or saved.config is None:
        raise ValueError("it has no loss history or configuration, so it was not written "
                         "by this command")
    if not np.all(np.isfinite(saved.loss_history)):
        raise ValueError("its loss history holds NaN or infinite values")
    if saved.dataset != dataset:
        raise ValueError(f"it was distilled from {saved.dataset}, not {dataset}")
    stored, requested = saved.config.to_dict(), config.to_dict()
    differences = [f"{field} {stored[field]!r} (this run: {requested[field]!r})"
                   for field in requested
                   if field not in RESUMABLE_CHANGES and stored[field] != requested[field]
                   and not (field == "l2reg" and config.learn_l2reg)]
    if differences:
        raise ValueError("it was distilled with other settings: " + "; ".join(differences)
                         + ". Resume it with the options (or --preset) it was made with")
    return saved
