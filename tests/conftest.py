import os

import numpy as np
import pytest

from distill.data import Dataset, Split


def offline_data_available() -> bool:
    return bool(os.environ.get("DISTILL_DATA_DIR"))


requires_mnist = pytest.mark.skipif(
    not offline_data_available(),
    reason="set DISTILL_DATA_DIR to the offline dataset files to run tests on real data",
)


def make_toy_dataset(num_features: int = 20, per_class: int = 40, num_classes: int = 10,
                     seed: int = 0) -> Dataset:
    """Separable Gaussian blobs with pixel-like values in [0, 1]."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.0, 1.0, size=(num_classes, num_features))

    def split(n):
        labels = np.repeat(np.arange(num_classes), n).astype(np.int32)
        images = np.clip(centers[labels] + 0.1 * rng.standard_normal((len(labels), num_features)), 0, 1)
        return Split(images=images.astype(np.float32), labels=labels)

    return Dataset(name="toy", train=split(per_class), test=split(per_class // 2),
                   class_names=tuple(str(c) for c in range(num_classes)))


@pytest.fixture
def toy_dataset():
    return make_toy_dataset()
