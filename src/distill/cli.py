"""Command line: ``python -m distill --dataset mnist --images-per-class 1 --out distilled.npz``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from distill.distillation import PRESETS, DistillConfig


def build_parser() -> argparse.ArgumentParser:
    defaults = DistillConfig()
    parser = argparse.ArgumentParser(
        prog="python -m distill",
        description="Distill a small synthetic training set for logistic regression.")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a named configuration; 'seed' is the original JAXopt notebook "
                             "(MNIST, 1 image per class, 50 steps, seed 0, CPU only)")
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist"],
                        help=f"dataset to distill (default {defaults.dataset})")
    parser.add_argument("--images-per-class", type=int,
                        help=f"distilled images per class (default {defaults.images_per_class})")
    parser.add_argument("--steps", type=int,
                        help=f"outer steps at most (default {defaults.steps})")
    parser.add_argument("--seed", type=int,
                        help=f"seed of the initial images (default {defaults.seed})")
    parser.add_argument("--out", default="distilled.npz",
                        help="where to write the distilled set (default distilled.npz)")
    parser.add_argument("--data-dir",
                        help="folder with offline dataset files (default: $DISTILL_DATA_DIR)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    overrides = {field: getattr(args, field)
                 for field in ("dataset", "images_per_class", "steps", "seed")
                 if getattr(args, field) is not None}
    if args.preset is None:
        return DistillConfig(**overrides)
    preset = PRESETS[args.preset]
    conflicting = {field: value for field, value in overrides.items()
                   if value != getattr(preset, field)}
    if conflicting:
        options = ", ".join(f"--{f.replace('_', '-')} {v}" for f, v in conflicting.items())
        raise ValueError(f"--preset {args.preset} fixes its own configuration; "
                         f"drop {options} or drop --preset")
    return preset


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.preset == "seed":
        import jax

        jax.config.update("jax_platforms", "cpu")  # the original runs on CPU only

    # Imported here so that --help stays fast.
    from distill import data, distillation, evaluate, io

    start = time.perf_counter()
    dataset = data.load_dataset(config.dataset, data_dir=args.data_dir)
    load_seconds = time.perf_counter() - start
    print(f"loaded {dataset.name}: {len(dataset.train)} training and {len(dataset.test)} "
          f"test images in {load_seconds:.1f} s", flush=True)

    result = distillation.distill(dataset.train.images, dataset.train.labels, config,
                                  num_classes=dataset.num_classes,
                                  progress=not args.no_progress)
    accuracy = evaluate.test_accuracy(result.images, result.labels, result.l2reg, dataset.test)
    path = io.save_distilled(args.out, result.images, result.labels, result.l2reg,
                             loss_history=result.loss_history,
                             config=str(dataclasses.asdict(config)))
    print(f"distilled {len(result.images)} images in {result.steps} outer steps, "
          f"{result.seconds:.1f} s", flush=True)
    print(f"outer loss {result.loss_history[0]:.4f} -> {result.final_loss:.4f}; "
          f"inner solves that stopped at maxiter: {result.inner_not_converged}")
    print(f"test accuracy of logistic regression trained on them: {accuracy:.2%}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
