"""The evaluation protocol, calibrated on random real images.

Before any distilled set is scored, the protocol (``distill.protocol``: the
benchmarks' ConvNet trained from scratch on the set alone, SGD, 300 epochs)
must reproduce the published scores of *random real* images, the row every
paper's table starts from. DC's table (Zhao et al. 2021, Table 1, evaluated
with its augmentation), as quoted by this project's issue 15 and its
performance notes: MNIST 64.9 +- 3.5 with 1 random real image per class and
95.1 +- 0.9 with 10. (Its other random-real figures are not quoted here: they
have not been checked against the paper.)

For each dataset, number of images per class and augmentation setting, the
script draws the random real subset of ``distill.evaluate.random_real_subset``
(seed 0), trains one ConvNet per initialization and tests it on the real
test split. It prints the mean and standard deviation, the time per
network and the peak resident memory, and writes them as JSON.

Usage: python benchmarks/convnet_protocol.py [--datasets mnist fashion_mnist]
       [--sizes 1 10 50] [--seeds 5] [--augment on off] [--epochs 300] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, machine

#: DC's published random-real scores with augmentation (Zhao et al. 2021, Table 1),
#: mean and standard deviation in percent.
PUBLISHED_RANDOM_REAL = {("mnist", 1): (64.9, 3.5), ("mnist", 10): (95.1, 0.9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seeds", type=int, default=5, help="initializations per setting")
    parser.add_argument("--augment", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from distill import data, evaluate, protocol

    print(f"machine: {machine()}\n", flush=True)
    print(f"{'dataset':>13} | {'per class':>9} | {'augment':>7} | {'test accuracy (%)':>17} | "
          f"{'published (%)':>13} | {'s per network':>13} | {'peak RSS (GiB)':>14}", flush=True)
    results = []
    for name in args.datasets:
        dataset = data.load_dataset(name)
        for images_per_class in args.sizes:
            images, labels = evaluate.random_real_subset(dataset.train, images_per_class, seed=0)
            for augment in args.augment:
                settings = protocol.Protocol(epochs=args.epochs, augment=augment == "on")
                start = time.perf_counter()
                with PeakMemory() as memory:
                    accuracies = protocol.test_accuracies(
                        images, labels, dataset, seeds=range(args.seeds), protocol=settings,
                        use_cache=False, progress=False)
                seconds = (time.perf_counter() - start) / args.seeds
                published = PUBLISHED_RANDOM_REAL.get((name, images_per_class))
                published_text = (f"{published[0]:.1f} +- {published[1]:.1f}"
                                  if published and augment == "on" else "")
                spread = np.std(accuracies, ddof=1) if len(accuracies) > 1 else float("nan")
                print(f"{name:>13} | {images_per_class:>9} | {augment:>7} | "
                      f"{100 * accuracies.mean():>8.1f} +- {100 * spread:<4.1f} | "
                      f"{published_text:>13} | {seconds:>13.0f} | {memory.peak / 2**30:>14.2f}",
                      flush=True)
                results.append({"dataset": name, "images_per_class": images_per_class,
                                "augment": augment == "on",
                                "protocol": dataclasses.asdict(settings),
                                "accuracies": accuracies.tolist(),
                                "seconds_per_network": seconds, "peak_rss_bytes": memory.peak,
                                "published_with_augmentation": published})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
