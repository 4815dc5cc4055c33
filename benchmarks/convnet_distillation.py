"""Sets distilled for the ConvNet, scored by the field's protocol, resumable.

For each dataset and number of images per class: one run of
``distill.network_distillation.distill_for_network`` (the command line's
``--model convnet``, its defaults unless options say otherwise), its wall time
and the process's peak resident memory during it, then the set's score by
``distill.protocol`` (the benchmarks' ConvNet trained from scratch on it, one
network per seed, with and without DC's augmentation), beside the random
real subset of the same size (the one the distillation starts from) scored
by the same protocol. ``--learn-labels`` distills with soft labels (report
those beside hard-label runs: soft labels are known to inflate these scores).

The whole grid (two datasets, 1, 10 and 50 images per class, five networks
for each of four scores) takes most of a day on two cores, so the run keeps
its state on disk and picks up where it stopped:

- ``--out-dir``: each distilled set, written as ``{dataset}-{per class}.npz``
  (``-soft.npz`` with learned labels) when its distillation ends. A set
  already there is scored, not distilled again, with the settings stored in
  it. A set made by the command line can be put there (its distillation
  can be resumed, ``--resume``, where this script's cannot).
- ``--json``: the figures, rewritten atomically after every network. A
  network already in the file is not trained again. The file holds each
  set's fingerprint: a set that changed since is refused, so that one row
  never mixes the networks of two sets, nor two protocols. Runs side by
  side (one per core, say) may share the file and the folder of sets as
  long as they do not distill the same set (give them different
  ``--datasets`` or ``--sizes``, or let one distill first): each merges
  what the others wrote before it writes, and a set another run wrote
  meanwhile is never overwritten.

``--report`` prints the table of what the file holds and trains nothing;
with ``--plot PATH`` it also draws the hard-label sets' scores against the
published ones.

Usage: python benchmarks/convnet_distillation.py [--datasets mnist fashion_mnist]
       [--sizes 1 10 50] [--steps 1000] [--seeds 5] [--augment on off]
       [--kinds distilled "random real"] [--learn-labels] [--out-dir DIR]
       [--json PATH] [--report [--plot PATH]]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, machine

KINDS = ("distilled", "random real")

#: Published test accuracies (%) of the same ConvNet trained on sets of 1, 10
#: and 50 images per class, as quoted in chapter 12 with its citations (DC:
#: Zhao et al. 2021; DSA: Zhao & Bilen 2021; KIP: Nguyen et al. 2021; FRePo:
#: Zhou et al. 2022; RCIG: Loo et al. 2023, the last two with learned labels),
#: and of all the training data. Published, not run here.
PUBLISHED = {
    "mnist": {"DC": (91.7, 97.4, 98.8), "DSA": (88.7, 97.8, 99.2), "KIP": (90.1, 97.5, 98.3),
              "FRePo": (93.0, 98.6, 99.2), "RCIG": (94.7, 98.9, 99.2), "all data": 99.6},
    "fashion_mnist": {"DC": (70.5, 82.3, 83.6), "DSA": (70.6, 84.6, 88.7),
                      "KIP": (73.5, 86.8, 88.0), "FRePo": (75.6, 86.2, 89.6),
                      "RCIG": (79.8, 88.5, 90.2), "all data": 93.5},
}


def load_state(path: Path | None) -> dict:
    """The figures file as a dict (a new one when there is none)."""
    if path is None or not path.exists():
        return {"machines": [], "cells": []}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"--json {path} is not readable JSON ({error}); move it away "
                         "to start afresh") from None
    if not isinstance(state, dict) or not isinstance(state.get("cells"), list):
        raise SystemExit(f"--json {path} was not written by this script (no 'cells' list)")
    return state


@contextlib.contextmanager
def locked_folder(folder: Path):
    """Hold an exclusive lock on ``folder`` (so that runs side by side take turns)."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def merge(state: dict, other: dict) -> None:
    """Add to ``state``, in place, the machines, sets and networks only ``other`` holds.

    A set both hold keeps ``state``'s fields, with those it lacks (None) taken
    from ``other``; a set of the same cell with another fingerprint is refused.
    """
    for name in other.get("machines", []):
        if name not in state["machines"]:
            state["machines"].append(name)
    for theirs in other["cells"]:
        ours = find_cell(state, theirs["dataset"], theirs["images_per_class"], theirs["labels"])
        if ours is None:
            state["cells"].append(theirs)
            continue
        if ours["set_fingerprint"] != theirs["set_fingerprint"]:
            raise SystemExit(
                f"another run wrote a different set for {theirs['dataset']} at "
                f"{theirs['images_per_class']} per class into the same --json: give runs side"
                " by side different --datasets or --sizes")
        for field, value in theirs.items():  # e.g. the distillation's time, when ours lacks it
            if ours.get(field) is None and value is not None:
                ours[field] = value
        have = {(net["augment"], net["kind"], net["seed"]) for net in ours["networks"]}
        ours["networks"].extend(net for net in theirs["networks"]
                                if (net["augment"], net["kind"], net["seed"]) not in have)


def save_state(path: Path | None, state: dict) -> None:
    """Write ``state`` atomically, first merging what other runs wrote there since."""
    if path is None:
        return
    from distill.atomic import write_atomically

    with locked_folder(path.parent):
        if path.exists():
            merge(state, load_state(path))
        text = json.dumps(state, indent=1).encode()
        write_atomically(path, lambda handle: handle.write(text))


def find_cell(state: dict, dataset: str, images_per_class: int, labels: str) -> dict | None:
    for cell in state["cells"]:
        if (cell["dataset"], cell["images_per_class"], cell["labels"]) == (
                dataset, images_per_class, labels):
            return cell
    return None


DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def summary(values) -> str:
    """``mean ± std% (networks)`` of test accuracies in [0, 1]; a dash when there are none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}% (1)"
    return (f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}% "
            f"({len(values)})")


def report(state: dict) -> None:
    """Print a Markdown table: one row per set and protocol, each score's mean ± std."""
    print("| set | steps, pool | distilling | peak RSS | augmentation | distilled (networks) "
          "| random real (networks) |")
    print("| --- | --- | ---: | ---: | --- | --- | --- |")
    order = {"mnist": 0, "fashion_mnist": 1}
    for cell in sorted(state["cells"], key=lambda cell: (
            order.get(cell["dataset"], 2), cell["dataset"], cell["labels"],
            cell["images_per_class"])):
        seconds = cell.get("distill_seconds")
        peak = cell.get("peak_rss_bytes")
        name = (f"{DATASET_NAMES.get(cell['dataset'], cell['dataset'])}, "
                f"{cell['images_per_class']} per class"
                + (", soft labels" if cell["labels"] == "soft" else ""))
        settings = f"{cell['config'].get('steps', '?')}, {cell['config'].get('pool_size', '?')}"
        scored = {net["augment"] for net in cell["networks"]}
        for augment in [augment for augment in ("on", "off") if augment in scored] or ["-"]:
            scores = {kind: [net["accuracy"] for net in cell["networks"]
                             if net["augment"] == augment and net["kind"] == kind]
                      for kind in KINDS}
            protocol = {"on": "with", "off": "without"}.get(augment, "not scored yet")
            print(f"| {name} | {settings} | {'?' if seconds is None else f'{seconds:.0f} s'} | "
                  f"{'?' if peak is None else f'{peak / 2**30:.2f} GiB'} | {protocol} | "
                  f"{summary(scores['distilled'])} | {summary(scores['random real'])} |")


def plot(state: dict, path: Path) -> None:
    """Draw the hard-label sets' scores against the published ones, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = (1, 10, 50)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for axis, (dataset, title) in zip(axes, (("mnist", "MNIST"),
                                             ("fashion_mnist", "Fashion-MNIST"))):
        published = PUBLISHED[dataset]
        for method, marker in (("DC", "s"), ("DSA", "^"), ("KIP", "v"), ("FRePo", "D"),
                               ("RCIG", "P")):
            axis.plot(sizes, published[method], marker=marker, color="0.6", linestyle=":",
                      linewidth=1, markersize=5, label=f"{method} (published)")
        axis.axhline(published["all data"], color="0.3", linewidth=1,
                     label="all the data (published)")
        lines = (("distilled", "on", "C0", "-", "distilled here, with augmentation"),
                 ("distilled", "off", "C0", "--", "distilled here, without"),
                 ("random real", "on", "C1", "-", "random real here, with augmentation"),
                 ("random real", "off", "C1", "--", "random real here, without"))
        for kind, augment, color, style, label in lines:
            points = []
            for size in sizes:
                cell = find_cell(state, dataset, size, "hard")
                values = [] if cell is None else [
                    100 * net["accuracy"] for net in cell["networks"]
                    if net["kind"] == kind and net["augment"] == augment]
                if values:
                    spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
                    points.append((size, np.mean(values), spread))
                else:  # no line drawn across a size the grid lacks
                    points.append((size, np.nan, np.nan))
            if not all(np.isnan(y) for _, y, _ in points):
                x, y, error = zip(*points)
                axis.errorbar(x, y, yerr=error, color=color, linestyle=style, marker="o",
                              markerfacecolor=color if augment == "on" else "white",
                              capsize=3, label=label)
        axis.set_xscale("log")
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.set_xlabel("images per class")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("ConvNet test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    for handle, label in zip(*axes[1].get_legend_handles_labels()):
        if label not in labels:
            handles.append(handle)
            labels.append(label)
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def obtain_set(args, name, dataset, images_per_class, state, json_path):
    """The cell of ``state`` for this set: distilled now, or read from ``--out-dir``."""
    from distill import cache, io, network_distillation, protocol
    from distill.config import NetworkConfig

    labels_kind = "soft" if args.learn_labels else "hard"
    suffix = "-soft" if args.learn_labels else ""
    set_path = (Path(args.out_dir) / f"{name}-{images_per_class}{suffix}.npz"
                if args.out_dir else None)
    cell = find_cell(state, name, images_per_class, labels_kind)
    if set_path is not None and set_path.exists():
        distilled = io.load_distilled(set_path)
        if distilled.dataset not in (None, name):
            raise SystemExit(f"{set_path} was distilled from {distilled.dataset}, not {name}")
        if len(distilled.images) != 10 * images_per_class:
            raise SystemExit(f"{set_path} holds {len(distilled.images)} images, not "
                             f"{10 * images_per_class} ({images_per_class} per class)")
        if (distilled.labels.ndim == 2) != args.learn_labels:
            raise SystemExit(f"{set_path} has {'soft' if distilled.labels.ndim == 2 else 'hard'}"
                             f" labels; this run scores {labels_kind} ones (--learn-labels)")
        config = distilled.config
        if config is not None and not isinstance(config, NetworkConfig):
            raise SystemExit(f"{set_path} was distilled for logistic regression, not for the "
                             "ConvNet (--model convnet)")
        for option in ("steps", "width", "pool_size"):
            given = getattr(args, option)
            if given is not None and config is not None and getattr(config, option) != given:
                raise SystemExit(
                    f"{set_path} was distilled with {option} {getattr(config, option)}, not "
                    f"--{option.replace('_', '-')} {given}: the option applies only to sets "
                    "this run distills; leave it out, or move the set away")
        images, labels = distilled.images, distilled.labels
        print(f"{name}, {images_per_class} per class: scoring the set in {set_path}",
              flush=True)
        record = {"distill_seconds": None, "peak_rss_bytes": None, "inner_not_converged": None}
    else:
        if cell is not None:
            raise SystemExit(
                f"--json {json_path} holds networks for {name} at {images_per_class} per class,"
                f" but its set is not in --out-dir ({set_path}); put the set back, or move the"
                " file away to start afresh")
        overrides = {option: getattr(args, option) for option in ("steps", "width", "pool_size")
                     if getattr(args, option) is not None}
        config = NetworkConfig(images_per_class=images_per_class,
                               learn_labels=args.learn_labels, **overrides)
        print(f"{name}, {images_per_class} per class: distilling ({config.steps} steps)",
              flush=True)
        start = time.perf_counter()
        with PeakMemory() as memory:
            run = network_distillation.distill_for_network(
                dataset.train, config, standardize=protocol.standardization(dataset),
                progress=not args.no_progress)
        record = {"distill_seconds": time.perf_counter() - start,
                  "peak_rss_bytes": memory.peak,
                  "inner_not_converged": run.inner_not_converged}
        images, labels = run.images, run.labels
        if set_path is not None:
            with locked_folder(set_path.parent):
                if set_path.exists():
                    raise SystemExit(
                        f"another run wrote {set_path} while this one distilled it; that set "
                        "is kept and this one dropped: give runs side by side different "
                        "--datasets or --sizes")
                io.save_distilled(set_path, run.images, run.labels, run.l2reg,
                                  loss_history=run.loss_history, config=config, dataset=name)
    fingerprint = [cache.fingerprint(images), cache.fingerprint(labels)]
    if cell is None:
        cell = {"dataset": name, "images_per_class": images_per_class, "labels": labels_kind,
                "set_file": set_path.name if set_path else None, "set_fingerprint": fingerprint,
                "config": config.to_dict() if config is not None else {}, **record,
                "networks": []}
        state["cells"].append(cell)
        save_state(json_path, state)
    elif cell["set_fingerprint"] != fingerprint:
        raise SystemExit(
            f"{set_path} is not the set whose networks --json {json_path} holds (its "
            "fingerprint changed); restore that set, or move the file away to start afresh")
    return cell, images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--steps", type=int, help="outer steps (default: NetworkConfig's)")
    parser.add_argument("--width", type=int, help="pool width (default: NetworkConfig's)")
    parser.add_argument("--pool-size", type=int, help="pool size (default: NetworkConfig's)")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation initializations")
    parser.add_argument("--augment", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="which sets to score: the distilled one, the random real one")
    parser.add_argument("--learn-labels", action="store_true")
    parser.add_argument("--epochs", type=int, default=300, help="evaluation epochs")
    parser.add_argument("--out-dir", help="keep each distilled set here (.npz), and score "
                        "the sets already there instead of distilling them again")
    parser.add_argument("--json", help="the figures; rewritten after every network, and "
                        "resumed from when it exists")
    parser.add_argument("--report", action="store_true",
                        help="print the table of what --json holds, and train nothing")
    parser.add_argument("--plot", help="with --report: also draw the scores of the "
                        "hard-label sets beside the published ones into this image")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args()
    if args.json and not args.out_dir and not args.report:
        parser.error("--json needs --out-dir: a run resumed from --json scores the sets "
                     "kept there")
    json_path = Path(args.json) if args.json else None
    state = load_state(json_path)
    if args.report:
        if json_path is None or not json_path.exists():
            raise SystemExit("--report needs --json naming an existing figures file")
        report(state)
        if args.plot:
            plot(state, Path(args.plot))
        return
    if args.seeds < 1 or args.epochs < 1:
        raise SystemExit("--seeds and --epochs must be at least 1")

    from distill import data, evaluate, protocol

    this_machine = machine()
    print(f"machine: {this_machine}\n", flush=True)
    if this_machine not in state.setdefault("machines", []):
        state["machines"].append(this_machine)
    for name in args.datasets:
        dataset = data.load_dataset(name)
        for images_per_class in args.sizes:
            cell, images, labels = obtain_set(args, name, dataset, images_per_class, state,
                                              json_path)
            real_images, real_labels = evaluate.random_real_subset(
                dataset.train, images_per_class, seed=cell["config"].get("seed", 0))
            sets = {"distilled": (images, labels), "random real": (real_images, real_labels)}
            for augment in args.augment:
                settings = protocol.Protocol(epochs=args.epochs, augment=augment == "on")
                for kind in args.kinds:
                    for seed in range(args.seeds):
                        other = [net["protocol"] for net in cell["networks"]
                                 if net["augment"] == augment
                                 and net["protocol"] != dataclasses.asdict(settings)]
                        if other:  # one row never mixes two protocols
                            raise SystemExit(
                                f"--json {json_path} scored {name} at {images_per_class} per "
                                f"class, augment {augment}, with {other[0]}, not "
                                f"{dataclasses.asdict(settings)} (--epochs)")
                        if any((net["augment"], net["kind"], net["seed"]) == (
                                augment, kind, seed) for net in cell["networks"]):
                            continue
                        start = time.perf_counter()
                        (accuracy,) = protocol.test_accuracies(
                            *sets[kind], dataset, seeds=(seed,), protocol=settings,
                            use_cache=False, progress=False)
                        seconds = time.perf_counter() - start
                        cell["networks"].append({
                            "augment": augment, "kind": kind, "seed": seed,
                            "accuracy": float(accuracy), "seconds": seconds,
                            "protocol": dataclasses.asdict(settings),
                            "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
                        save_state(json_path, state)
                        print(f"{name}, {images_per_class} per class, augment {augment}, "
                              f"{kind}, seed {seed}: {100 * accuracy:.2f}% ({seconds:.0f} s)",
                              flush=True)
    print()
    report(state)


if __name__ == "__main__":
    main()
