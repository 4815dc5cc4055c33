"""Command line.

- ``python -m distill --dataset mnist --images-per-class 1 --out distilled.npz``
  distills a set;
- ``python -m distill evaluate distilled.npz`` scores any set by the field's
  evaluation protocol (:mod:`distill.protocol`): the benchmarks' ConvNet
  trained from scratch on it, tested on the real test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

from distill import checks
from distill.config import IMPLICIT_DIFF_BACKENDS, PRESETS, DistillConfig, NetworkConfig
from distill.data import CLASS_NAMES

#: The configuration without ``--preset``: the book's recommended setting.
DEFAULT_PRESET = "learned-l2reg"

#: The dataset without ``--dataset``.
DEFAULT_DATASET = "mnist"

#: Models a set can be distilled for (``--model``).
MODELS = ("linear", "convnet")

#: NetworkConfig fields with an option of their own (``--width``, ``--pool-size``),
#: positive integers, for --model convnet only.
NETWORK_ONLY = ("width", "pool_size")

#: Presets that fix every option (the others take --dataset, --steps, ... on top).
LOCKED_PRESETS = ("seed",)

#: Exit statuses besides 0 (success) and 2 (bad options or input, as argparse).
EXIT_NON_FINITE = 1      # the outer loss became NaN or infinite; the last finite step is kept
EXIT_INTERRUPTED = 130   # Ctrl-C; the last completed step is kept

EPILOG = """exit status: 0 on success; 1 when the outer loss became NaN or infinite (the
last step with a finite loss stays in --out); 2 for bad options or input (a
--resume file that is missing, damaged or of another configuration, an --out
that exists without --overwrite); 130 when interrupted (the last completed
step stays in --out). A warning says when inner solves stopped at their
maxiter: the hypergradient is then not the true one."""


def build_parser() -> argparse.ArgumentParser:
    """The command line's options, with the defaults of ``PRESETS[DEFAULT_PRESET]``.

    Returns:
      The ``argparse`` parser of ``python -m distill``.
    """
    defaults = PRESETS[DEFAULT_PRESET]
    network = NetworkConfig()
    parser = argparse.ArgumentParser(
        prog="python -m distill", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distill a small synthetic training set for logistic regression "
                    "(--model linear, the default) or for the benchmarks' ConvNet (--model "
                    "convnet). By default the inner l2reg is learned along with the images "
                    "(the chapter 'Beyond pixels'). 'python -m distill evaluate SET.npz' "
                    "scores a set by the field's protocol.")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help=f"a named configuration (default {DEFAULT_PRESET}: l2reg "
                             "learned with the images): 'seed' is the "
                             "original JAXopt notebook (MNIST, 1 image per class, 50 steps, "
                             "seed 0, CPU only) and takes no other option; 'fixed-l2reg' "
                             "keeps l2reg at 0.1 and hard labels, as the original, on the "
                             "fast path")
    parser.add_argument("--model", choices=MODELS, default="linear",
                        help="the model the set is distilled for: 'linear' (default), "
                             "logistic regression on the pixels (Parts I-II); 'convnet', "
                             "the benchmarks' ConvNet: logistic regression on the features "
                             "of a pool of ConvNets trained online (Part III; score the "
                             "result with 'python -m distill evaluate')")
    parser.add_argument("--width", type=int,
                        help="--model convnet: channels of the pool's ConvNets "
                             f"(default {NetworkConfig().width})")
    parser.add_argument("--pool-size", type=int,
                        help="--model convnet: networks in the pool, each trained online "
                             f"and reset in turn (default {NetworkConfig().pool_size}; "
                             "at 1 image per class 8 scores higher: "
                             "benchmarks/README.md)")
    parser.add_argument("--dataset", choices=sorted(CLASS_NAMES),
                        help=f"dataset to distill (default {DEFAULT_DATASET})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--images-per-class", type=int,
                      help=f"distilled images per class (default {defaults.images_per_class}; "
                           f"{network.images_per_class} with --model convnet)")
    size.add_argument("--images", type=int, metavar="N",
                      help="distilled images in all, shared evenly among the classes "
                           "(a multiple of the number of classes, 10)")
    parser.add_argument("--steps", type=int,
                        help=f"outer steps at most (default {defaults.steps}, "
                             f"{PRESETS['fixed-l2reg'].steps} with --preset fixed-l2reg; "
                             f"the run stops earlier when the outer gradient norm falls "
                             f"below {defaults.outer_tol}); with --model convnet, the steps "
                             f"(default {network.steps})")
    parser.add_argument("--seed", type=int,
                        help=f"seed of the initial images (default {defaults.seed}); with "
                             "--model convnet also of the networks and the real batches")
    parser.add_argument("--out", default="distilled.npz",
                        help="where to write the distilled set (default distilled.npz; "
                             "folders are created)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (a run resumed from --out itself "
                             "continues it and needs no --overwrite)")
    parser.add_argument("--learn-l2reg", action=argparse.BooleanOptionalAction, default=None,
                        help="learn the inner l2reg along with the images (default: on; "
                             f"--no-learn-l2reg keeps it at {defaults.l2reg}, "
                             f"{network.l2reg} with --model convnet)")
    parser.add_argument("--learn-labels", action=argparse.BooleanOptionalAction, default=None,
                        help="learn soft labels along with the images (default: off)")
    parser.add_argument("--implicit-diff", choices=IMPLICIT_DIFF_BACKENDS,
                        help="who differentiates the inner solve implicitly: 'jaxopt' "
                             "(default; JAXopt's solvers, archived upstream) or 'jax' "
                             "(Optax's solvers and jax.lax.custom_root: core JAX, no JAXopt "
                             "needed; the same hypergradient, to the inner tolerance)")
    parser.add_argument("--resume", metavar="PATH",
                        help="start from the distilled set saved in PATH (by an earlier run "
                             "with the same model, dataset, images per class and settings) "
                             "instead of the usual start, and run --steps more steps")
    parser.add_argument("--save-every", type=int, default=10, metavar="N",
                        help="also write --out every N outer steps, so that a stopped run "
                             "can be resumed (default 10)")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="split the real data over the first N devices JAX sees "
                             "(default: all of them, over every process)")
    parser.add_argument("--distributed", action="store_true",
                        help="one process of a multi-host run: join the others first "
                             "(jax.distributed.initialize(), which finds them on the "
                             "clusters JAX knows, such as Cloud TPU and SLURM); every "
                             "process runs the same command")
    parser.add_argument("--data-dir",
                        help="folder with offline dataset files (default: $DISTILL_DATA_DIR)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not keep compiled programs on disk for the next run "
                             "(by default they go to the data cache folder)")
    return parser


def config_from_args(args: argparse.Namespace) -> DistillConfig | NetworkConfig:
    """The run's configuration (its dataset is ``dataset_from_args``).

    Args:
      args: the parsed options (:func:`build_parser`).

    Returns:
      With ``--model linear``: the preset's :class:`~distill.config.DistillConfig`
      (``--preset``, or ``DEFAULT_PRESET``) with the options given on the
      command line. With ``--model convnet``: a
      :class:`~distill.config.NetworkConfig` with those options.

    Raises:
      ValueError: naming the option, when one is invalid, conflicts with a
        preset that fixes its own configuration, or does not apply to the model.
    """
    overrides = {field: getattr(args, field)
                 for field in ("images_per_class", "steps", "seed", "learn_l2reg",
                               "learn_labels", "implicit_diff")
                 if getattr(args, field, None) is not None}
    model = getattr(args, "model", "linear")
    if model == "convnet" and args.preset is not None:
        raise ValueError(f"--preset {args.preset} is a setting of --model linear; drop it "
                         "or drop --model convnet")
    for field in NETWORK_ONLY:
        option, value = f"--{field.replace('_', '-')}", getattr(args, field, None)
        if value is None:
            continue
        if model != "convnet":
            raise ValueError(f"{option} {value} applies to --model convnet only")
        if value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value}")
        overrides[field] = value
    for field in ("images_per_class", "steps"):
        if field in overrides and overrides[field] < 1:
            raise ValueError(f"--{field.replace('_', '-')} must be a positive integer, "
                             f"got {overrides[field]}")
    if getattr(args, "images", None) is not None:
        try:
            overrides["images_per_class"] = checks.images_per_class(
                args.images, len(CLASS_NAMES[dataset_from_args(args)]))
        except ValueError as error:
            raise ValueError(f"--images {args.images}: {error}") from None
    if args.preset == "seed" and args.dataset not in (None, DEFAULT_DATASET):
        raise ValueError(f"--preset seed fixes its own configuration; drop --dataset "
                         f"{args.dataset} or drop --preset")
    if model == "convnet":
        return NetworkConfig(**overrides)
    preset = PRESETS[args.preset or DEFAULT_PRESET]
    if args.preset not in LOCKED_PRESETS:
        return dataclasses.replace(preset, **overrides)
    conflicting = {field: value for field, value in overrides.items()
                   if value != getattr(preset, field)}
    if conflicting:
        options = ", ".join(
            f"--images {args.images}" if f == "images_per_class" and args.images is not None
            else f"--{f.replace('_', '-')} {v}" for f, v in conflicting.items())
        raise ValueError(f"--preset {args.preset} fixes its own configuration; "
                         f"drop {options} or drop --preset")
    return preset


def dataset_from_args(args: argparse.Namespace) -> str:
    """The dataset to distill.

    Args:
      args: the parsed options (:func:`build_parser`).

    Returns:
      ``--dataset``, or ``DEFAULT_DATASET`` (MNIST) when it is not given.
    """
    return args.dataset or DEFAULT_DATASET


def check_output(args: argparse.Namespace) -> str | None:
    """Why ``--out`` cannot be written, checked before any work is done.

    Creates the folders of ``--out`` (call it after every other check).

    Args:
      args: the parsed options (:func:`build_parser`).

    Returns:
      A message naming ``--out`` and what to do, or None when it can be written.
    """
    out = Path(args.out)
    if out.is_dir():
        return f"--out {out} is a folder: give a file name, e.g. {out / 'distilled.npz'}"
    if out.exists() and not args.overwrite:
        continues = args.resume is not None and Path(args.resume).exists() \
            and os.path.samefile(args.resume, out)
        if not continues:
            return (f"--out {out} exists: pass --overwrite to replace it, choose another "
                    f"--out, or continue that run with --resume {out}")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder of --out {out}: {error}"
    if not os.access(folder, os.W_OK):
        return f"cannot write to the folder of --out {out}: {folder} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m distill``: check the options and files, load, distill, report, save.

    Args:
      argv: the options (default: ``sys.argv[1:]``).

    Returns:
      The exit status: 0 on success; 2 when ``--resume`` or the dataset
      cannot be read (bad options exit through ``argparse``, also with 2,
      naming the option); ``EXIT_NON_FINITE`` when the outer loss became NaN
      or infinite and ``EXIT_INTERRUPTED`` after Ctrl-C, the last complete
      step saved in ``--out`` either way.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        return evaluate_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.save_every < 1:
        parser.error(f"--save-every must be a positive integer, got {args.save_every}")
    if args.devices is not None and args.devices < 1:
        parser.error(f"--devices must be a positive integer, got {args.devices}")
    if importlib.util.find_spec("jaxopt") is None:
        if args.preset == "seed":
            parser.error("JAXopt is not installed, and --preset seed (the original notebook, "
                         "JAXopt's solvers) needs it: install it (pip install jaxopt==0.8.5)")
        if config.implicit_diff == "jaxopt":
            parser.error("JAXopt is not installed, and --implicit-diff jaxopt (the default) "
                         "needs it: install it (pip install jaxopt==0.8.5), or pass "
                         "--implicit-diff jax (Optax's solvers and jax.lax.custom_root)")
    dataset_name = dataset_from_args(args)
    num_classes = len(CLASS_NAMES[dataset_name])

    # Every check of the options and files comes before any work (loading
    # the data can take minutes the first time). The file checks need NumPy
    # only: JAX is imported after them.
    from distill import data, io

    saved, earlier_history = None, []
    if args.resume is not None:
        try:
            saved = io.load_for_resume(args.resume, config, dataset_name,
                                       num_classes=num_classes, num_features=data.NUM_FEATURES)
        except FileNotFoundError:
            print(f"error: cannot resume from {args.resume}: no such file", file=sys.stderr)
            return 2
        except (ValueError, OSError) as error:
            print(f"error: cannot resume from {args.resume}: {error}", file=sys.stderr)
            return 2
        earlier_history = [float(value) for value in saved.loss_history]
    problem = check_output(args)
    if problem:
        parser.error(problem)

    import jax

    if args.preset == "seed":
        jax.config.update("jax_platforms", "cpu")  # the original runs on CPU only
    if not args.no_compile_cache:
        # A later run loads the compiled outer step instead of compiling it again.
        jax.config.update("jax_compilation_cache_dir", str(data.cache_dir() / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    from distill import sharding

    if args.distributed:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError, TypeError) as error:
            parser.error(f"--distributed: cannot join the other processes: {error}")
    try:
        mesh = sharding.make_mesh(args.devices)
    except ValueError as error:
        parser.error(f"--devices: {error}")
    if jax.process_index() > 0:
        # Every process takes the same steps; the first one reports and writes --out.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)
        args.no_progress = True
    start = time.perf_counter()
    try:
        dataset = data.load_dataset(dataset_name, data_dir=args.data_dir)
    except data.DatasetUnavailableError as error:
        print(f"error: cannot load {dataset_name}: {error}", file=sys.stderr)
        return 2
    print(f"loaded {dataset.name}: {len(dataset.train)} training and {len(dataset.test)} "
          f"test images in {time.perf_counter() - start:.1f} s", flush=True)
    split = sharding.split_of(config.batch_size if isinstance(config, NetworkConfig)
                              else len(dataset.train), mesh.size)
    what = ("each batch of real images" if isinstance(config, NetworkConfig)
            else "the real training images")
    print(f"devices: {mesh.size} ({mesh.devices.flat[0].platform}, {jax.process_count()} "
          f"process{'es' if jax.process_count() > 1 else ''}); {what} split over them: "
          f"{split.describe()}", flush=True)
    if isinstance(config, NetworkConfig):
        return _distill_for_network(args, config, dataset, saved, earlier_history, mesh)
    from distill import distillation, model

    if saved is not None:
        print(f"resuming from {args.resume}: outer loss {earlier_history[-1]:.4f} after "
              f"{len(earlier_history) - 1} steps", flush=True)

    saved_steps = None

    def save(images, labels, l2reg, loss_history):
        nonlocal saved_steps
        # A resumed run's history continues the saved one (whose last entry is
        # this run's starting loss).
        history = earlier_history[:-1] + list(loss_history)
        if not _writes_files():
            saved_steps = len(history) - 1
            return args.out
        path = io.save_distilled(args.out, images, labels, l2reg, loss_history=history,
                                 config=config, dataset=dataset_name)
        saved_steps = len(history) - 1
        return path

    try:
        result = distillation.distill(
            dataset.train.images, dataset.train.labels, config,
            init_images=None if saved is None else saved.images,
            init_l2reg=None if saved is None else saved.l2reg,
            init_labels=None if saved is None or saved.labels.ndim == 1 else saved.labels,
            num_classes=dataset.num_classes, mesh=mesh, progress=not args.no_progress,
            checkpoint=save, checkpoint_every=args.save_every)
    except KeyboardInterrupt:
        return _report_stop(None, saved_steps, args.out)
    except FloatingPointError as error:
        return _report_stop(error, saved_steps, args.out,
                            "The outer step was too long or the inner problem became "
                            "unstable: try fewer --images-per-class or --no-learn-l2reg")
    path = save(result.images, result.labels, result.l2reg, result.loss_history)
    # The run's own inner solution is the trained model: it meets the inner
    # tolerance (checked by distill), so no separate fit is needed.
    accuracy = model.accuracy(result.inner_params, dataset.test.images, dataset.test.labels)
    print_summary(result, config, accuracy)
    print(f"wrote {path}")
    return 0


def _writes_files() -> bool:
    """Whether this process writes --out: the first one of a multi-host run, or the only one."""
    import jax

    return jax.process_index() == 0


def _report_stop(error, saved_steps, out, advice: str = "") -> int:
    """Say what a stopped run left in ``out``; the exit status.

    ``error`` is the ``FloatingPointError`` that stopped it, or None for Ctrl-C.
    """
    if error is None:
        if saved_steps is None:
            print(f"\nstopped before the first step was saved; nothing was written to {out}",
                  file=sys.stderr)
        else:
            print(f"\nstopped; the last complete step ({saved_steps}) is in {out}: "
                  f"continue with --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if saved_steps is None:
        kept = f"nothing was written to {out}"
    else:
        kept = (f"the last step with a finite loss ({saved_steps}) is in {out}; "
                "the loss history shows where it went wrong")
    print(f"error: {error}; {kept}. {advice}".rstrip(), file=sys.stderr)
    return EXIT_NON_FINITE


def _distill_for_network(args, config: NetworkConfig, dataset, saved, earlier_history,
                         mesh) -> int:
    """``main``'s run with ``--model convnet``: distill, report, save; the exit status."""
    from distill import io, network_distillation, protocol

    if saved is not None:
        print(f"resuming from {args.resume}: {len(earlier_history)} steps done, last batch "
              f"loss {earlier_history[-1]:.4f}", flush=True)
    dataset_name = dataset_from_args(args)
    saved_steps = None

    def save(images, labels, l2reg, loss_history):
        nonlocal saved_steps
        history = earlier_history + list(loss_history)  # one loss per step, appended
        if not _writes_files():
            saved_steps = len(history)
            return args.out
        path = io.save_distilled(args.out, images, labels, l2reg, loss_history=history,
                                 config=config, dataset=dataset_name)
        saved_steps = len(history)
        return path

    try:
        result = network_distillation.distill_for_network(
            dataset.train, config, standardize=protocol.standardization(dataset),
            num_classes=dataset.num_classes,
            init_images=None if saved is None else saved.images,
            init_l2reg=None if saved is None else saved.l2reg,
            init_labels=None if saved is None or saved.labels.ndim == 1 else saved.labels,
            start_step=len(earlier_history), mesh=mesh, progress=not args.no_progress,
            checkpoint=save, checkpoint_every=args.save_every)
    except KeyboardInterrupt:
        return _report_stop(None, saved_steps, args.out)
    except FloatingPointError as error:
        return _report_stop(error, saved_steps, args.out,
                            "Its steps were too long: lower NetworkConfig's learning_rate or "
                            "pool_learning_rate (distill.network_distillation from Python)")
    path = save(result.images, result.labels, result.l2reg, result.loss_history)
    window = min(50, len(result.loss_history))
    print(f"distilled {len(result.images)} images for a ConvNet in {result.steps} steps, "
          f"{result.seconds:.1f} s; loss on the real batches (mean of {window} steps) "
          f"{np.mean(result.loss_history[:window]):.4f} -> "
          f"{np.mean(result.loss_history[-window:]):.4f}; inner solves that stopped at "
          f"maxiter: {result.inner_not_converged} of {len(result.inner_errors)}", flush=True)
    _print_learned(result, config)
    print(f"wrote {path}; score it with: python -m distill evaluate {path}")
    return 0


def _print_learned(result, config) -> None:
    """Print the l2reg and soft labels a run learned along with the images, if any."""
    learned = [f"l2reg {result.l2reg:.3g}"] if config.learn_l2reg else []
    if config.learn_labels:
        learned.append(f"soft labels (mean weight on the own class "
                       f"{np.mean(np.max(result.labels, axis=1)):.2f})")
    if learned:
        print(f"learned along with the images: {', '.join(learned)}")


def print_summary(result, config: DistillConfig, accuracy: float) -> None:
    """Print what the run did, why it stopped, what it learned and how well it teaches.

    Args:
      result: the run's :class:`~distill.distillation.DistillResult`.
      config: its configuration.
      accuracy: the test accuracy of logistic regression trained on the set.

    Returns:
      None; it prints.
    """
    stopped = {"converged": f"the outer gradient norm fell below {config.outer_tol}",
               "max_steps": f"--steps {config.steps} reached",
               "line_search_failed": "the line search found no lower loss: it is flat to "
                                     "within the accuracy of the inner solves",
               }[result.stop_reason]
    print(f"distilled {len(result.images)} images in {result.steps} outer steps, "
          f"{result.seconds:.1f} s (compiling {result.compile_seconds:.1f} s); stopped: "
          f"{stopped}", flush=True)
    print(f"outer loss {result.loss_history[0]:.4f} -> {result.final_loss:.4f}; "
          f"inner solves that stopped at maxiter: {result.inner_not_converged} of "
          f"{len(result.inner_errors)}")
    _print_learned(result, config)
    print(f"test accuracy of logistic regression trained on them: {accuracy:.2%}")


def build_evaluate_parser() -> argparse.ArgumentParser:
    """The options of ``python -m distill evaluate``.

    Returns:
      The ``argparse`` parser of the evaluation subcommand.
    """
    from distill.protocol import Protocol

    defaults = Protocol()
    parser = argparse.ArgumentParser(
        prog="python -m distill evaluate",
        description="Score a distilled set by the field's protocol: the benchmarks' ConvNet "
                    f"(3 blocks, width {defaults.width}) trained from scratch on the set "
                    f"alone with SGD (momentum {defaults.momentum}, weight decay "
                    f"{defaults.weight_decay}, learning rate {defaults.learning_rate} divided "
                    f"by 10 at half the epochs, batches of {defaults.batch_size}), then "
                    "tested on the real test split; mean and standard deviation over "
                    "several initializations.")
    parser.add_argument("set", metavar="SET.npz",
                        help="a distilled set: images (k, 784) on the [0, 1] pixel scale, "
                             "labels (k,) classes or (k, 10) probabilities")
    parser.add_argument("--dataset", choices=sorted(CLASS_NAMES),
                        help="the real dataset to test on (default: the one the file names, "
                             f"else {DEFAULT_DATASET})")
    parser.add_argument("--seeds", type=int, default=5, metavar="N",
                        help="initializations to train, seeds 0..N-1 (default 5)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help=f"epochs of training (default {defaults.epochs})")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="augment every batch with DC's random crop, scale or rotation, "
                             "as the published tables do (default: on)")
    parser.add_argument("--data-dir",
                        help="folder with offline dataset files (default: $DISTILL_DATA_DIR)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def evaluate_main(argv: list[str] | None = None) -> int:
    """``python -m distill evaluate``: score a distilled set by the evaluation protocol.

    Args:
      argv: the options after ``evaluate``.

    Returns:
      The exit status: 0 on success; 2 when the file or the dataset cannot
      be read (bad options exit through ``argparse``, also with 2);
      ``EXIT_NON_FINITE`` when a network's training loss becomes NaN or infinite.
    """
    parser = build_evaluate_parser()
    args = parser.parse_args(argv)
    for option in ("seeds", "epochs"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be a positive integer, got {getattr(args, option)}")
    from distill import data, io

    try:
        distilled = io.load_distilled(args.set)
    except FileNotFoundError:
        print(f"error: cannot evaluate {args.set}: no such file", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: cannot evaluate {args.set}: {error}", file=sys.stderr)
        return 2
    dataset_name = args.dataset or distilled.dataset or DEFAULT_DATASET
    try:
        dataset = data.load_dataset(dataset_name, data_dir=args.data_dir)
    except data.DatasetUnavailableError as error:
        print(f"error: cannot load {dataset_name}: {error}", file=sys.stderr)
        return 2
    from distill import protocol

    settings = protocol.Protocol(epochs=args.epochs, augment=args.augment)
    start = time.perf_counter()
    try:
        accuracies = protocol.test_accuracies(distilled.images, distilled.labels, dataset,
                                              seeds=range(args.seeds), protocol=settings,
                                              progress=not args.no_progress)
    except FloatingPointError as error:
        print(f"error: cannot evaluate {args.set}: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    kind = "soft" if distilled.labels.ndim == 2 else "hard"
    print(f"{args.set}: {len(distilled.images)} images, {kind} labels, {dataset_name}; "
          f"{args.epochs} epochs, {'with' if args.augment else 'without'} augmentation")
    print("test accuracy per initialization: "
          + ", ".join(f"{accuracy:.2%}" for accuracy in accuracies))
    spread = f" +- {np.std(accuracies, ddof=1):.2%}" if len(accuracies) > 1 else ""
    print(f"ConvNet test accuracy: {np.mean(accuracies):.2%}{spread} "
          f"({len(accuracies)} initializations, {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
