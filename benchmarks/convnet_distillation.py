"""Sets distilled for the ConvNet, scored by the field's protocol.

For each dataset and number of images per class: one run of
``distill.network_distillation.distill_for_network`` (the command line's
``--model convnet``, its defaults unless options say otherwise), its wall time
and the process's peak resident memory during it, then the set's score by
``distill.protocol`` (the benchmarks' ConvNet trained from scratch on it, one
network per seed, with and without DC's augmentation), beside the random
real subset of the same size scored by the same networks' protocol.
``--learn-labels`` distills with soft labels (report those beside hard-label
runs: soft labels are known to inflate these scores).

Usage: python benchmarks/convnet_distillation.py [--datasets mnist fashion_mnist]
       [--sizes 1 10 50] [--steps 1000] [--seeds 5] [--augment on off]
       [--learn-labels] [--out-dir DIR] [--json PATH]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--steps", type=int, help="outer steps (default: NetworkConfig's)")
    parser.add_argument("--width", type=int, help="pool width (default: NetworkConfig's)")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation initializations")
    parser.add_argument("--augment", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--learn-labels", action="store_true")
    parser.add_argument("--epochs", type=int, default=300, help="evaluation epochs")
    parser.add_argument("--out-dir", help="also save each distilled set here (.npz)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from distill import data, evaluate, io, network_distillation, protocol
    from distill.config import NetworkConfig

    print(f"machine: {machine()}\n", flush=True)
    print(f"{'dataset':>13} | {'per class':>9} | {'labels':>6} | {'distill (s)':>11} | "
          f"{'peak RSS (GiB)':>14} | {'augment':>7} | {'distilled (%)':>13} | "
          f"{'random real (%)':>15}", flush=True)
    overrides = {name: getattr(args, name) for name in ("steps", "width")
                 if getattr(args, name) is not None}
    results = []
    for name in args.datasets:
        dataset = data.load_dataset(name)
        standardize = protocol.standardization(dataset)
        for images_per_class in args.sizes:
            config = NetworkConfig(images_per_class=images_per_class,
                                   learn_labels=args.learn_labels, **overrides)
            start = time.perf_counter()
            with PeakMemory() as memory:
                run = network_distillation.distill_for_network(
                    dataset.train, config, standardize=standardize, progress=False)
            seconds = time.perf_counter() - start
            if args.out_dir:
                io.save_distilled(Path(args.out_dir) / f"{name}-{images_per_class}.npz",
                                  run.images, run.labels, run.l2reg,
                                  loss_history=run.loss_history, config=config, dataset=name)
            real_images, real_labels = evaluate.random_real_subset(
                dataset.train, images_per_class, seed=config.seed)
            for augment in args.augment:
                settings = protocol.Protocol(epochs=args.epochs, augment=augment == "on")
                scores = {
                    kind: protocol.test_accuracies(images, labels, dataset,
                                                   seeds=range(args.seeds), protocol=settings,
                                                   progress=False)
                    for kind, images, labels in (("distilled", run.images, run.labels),
                                                 ("random real", real_images, real_labels))}

                def text(values):
                    spread = np.std(values, ddof=1) if len(values) > 1 else float("nan")
                    return f"{100 * np.mean(values):.1f} +- {100 * spread:.1f}"

                print(f"{name:>13} | {images_per_class:>9} | "
                      f"{'soft' if args.learn_labels else 'hard':>6} | {seconds:>11.0f} | "
                      f"{memory.peak / 2**30:>14.2f} | {augment:>7} | "
                      f"{text(scores['distilled']):>13} | {text(scores['random real']):>15}",
                      flush=True)
                results.append({"dataset": name, "images_per_class": images_per_class,
                                "config": config.to_dict(), "augment": augment == "on",
                                "protocol": dataclasses.asdict(settings),
                                "distill_seconds": seconds, "peak_rss_bytes": memory.peak,
                                "inner_not_converged": run.inner_not_converged,
                                "distilled": scores["distilled"].tolist(),
                                "random_real": scores["random real"].tolist()})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
