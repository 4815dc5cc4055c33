"""A child process for tests/test_sharding.py: short distillations on a mesh.

``python tests/sharded_run.py DEVICES [PROCESS_ID NUM_PROCESSES PORT]``
sets the number of CPU devices before JAX starts (and joins a group of
processes on localhost when the last three are given), then, for the linear
model and for the ConvNet, runs a short distillation of toy data on a mesh
of all devices. Its last line of output is JSON: each run's loss history,
final images, l2reg and data split.
The example count and the batch size are not multiples of 8 or of 4, so the
padding is exercised.
"""

import json
import sys

import jax

devices = int(sys.argv[1])
jax.config.update("jax_num_cpu_devices", devices)
if len(sys.argv) > 2:
    process_id, num_processes, port = map(int, sys.argv[2:5])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                               num_processes=num_processes, process_id=process_id)

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from distill import network_distillation, sharding  # noqa: E402
from distill.config import PRESETS, NetworkConfig  # noqa: E402
from distill.data import Split  # noqa: E402
from distill.distillation import distill  # noqa: E402


def toy_split(num_features, per_class, seed=0):
    """Separable blobs on the [0, 1] pixel scale, 10 classes."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.0, 1.0, size=(10, num_features))
    labels = np.repeat(np.arange(10), per_class).astype(np.int32)
    images = np.clip(centers[labels] + 0.1 * rng.standard_normal((len(labels), num_features)),
                     0, 1).astype(np.float32)
    return Split(images=images, labels=labels)


def runs(mesh):
    linear_data = toy_split(50, 41)  # 410 examples: 8 and 4 devices pad them
    linear = distill(linear_data.images, linear_data.labels,
                     dataclasses.replace(PRESETS["learned-l2reg"], steps=4),
                     mesh=mesh, progress=False)
    network_data = toy_split(784, 6)
    network = network_distillation.distill_for_network(
        network_data, NetworkConfig(images_per_class=1, steps=3, width=4, pool_size=2,
                                    batch_size=30, reset_every=2),
        standardize=(0.5, 0.3), mesh=mesh, progress=False)
    return {name: {"loss_history": [float(v) for v in run.loss_history],
                   "images": run.images.tolist(), "l2reg": run.l2reg,
                   "split": dataclasses.asdict(run.data_split)}
            for name, run in (("linear", linear), ("network", network))}


print(json.dumps({"devices": len(jax.devices()), "processes": jax.process_count(),
                  **runs(sharding.make_mesh())}))
