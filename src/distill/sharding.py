"""The real data split across every device JAX sees: one mesh, one code path.

The outer loss is a mean over the real training examples, and each outer step
reads all of them (or a batch of them). That is the part worth spreading over
devices: the distilled set, the inner solution and the networks are small and
stay whole on every device. So the helper lays the devices out as a
one-dimensional mesh whose only axis, ``"examples"``, splits the real data.
Arrays placed with ``NamedSharding(mesh, P("examples"))`` hold ``n / d``
examples per device; JAX's ``jit`` then compiles each step for the whole
mesh, with each device summing over its own examples and one all-reduce
adding the partial sums (XLA inserts it where the loss reduces over the
example axis). One device is a mesh of one: the same code, with nothing
to split.

Each host holds the whole data in its memory (every process loads the
dataset); each device holds only its shard. When the example count is not a
multiple of the device count, the data are padded with examples of weight zero, so that no example is dropped or counted
twice: the loss is then ``sum_i w_i l_i / sum_i w_i``
(:func:`distill.model.data_loss` with ``weights``).

Several hosts work the same way once ``jax.distributed.initialize()`` has
run in every process: ``jax.devices()`` then lists the devices of all of
them, every process builds the same mesh, and each transfers only the
shards that its own devices hold (every process calls these functions with
the same full arrays).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from distill import checks

#: The mesh's one axis: the real examples are split along it.
AXIS = "examples"


def make_mesh(devices: int | None = None) -> Mesh:
    """A one-dimensional mesh over the first ``devices`` of ``jax.devices()``.

    Args:
      devices: how many devices to use; all of them (over every process) when None.

    Returns:
      A ``jax.sharding.Mesh`` with the one axis :data:`AXIS`.

    Raises:
      ValueError: when ``devices`` is not a positive integer, or more than
        JAX sees (the message says how many it sees), or when several
        processes run and ``devices`` leaves some of them without a device.
    """
    available = jax.devices()
    devices = len(available) if devices is None else checks.positive_int(devices, "devices")
    if devices > len(available):
        raise ValueError(f"devices={devices}, but JAX sees {len(available)} "
                         f"({available[0].platform}): use at most {len(available)}")
    chosen = available[:int(devices)]
    if len({device.process_index for device in chosen}) < jax.process_count():
        raise ValueError(f"devices={devices} leaves some of the {jax.process_count()} "
                         "processes without a device: use all devices, or as many as "
                         "reach every process")
    return Mesh(np.array(chosen), (AXIS,))


@dataclasses.dataclass(frozen=True)
class ExampleSplit:
    """How :func:`shard_examples` spread the examples over the mesh.

    Attributes:
      devices: devices in the mesh.
      examples: real examples.
      per_device: examples each device holds, padding included.
      padding: examples of weight zero added at the end (fewer than ``devices``).
    """

    devices: int
    examples: int
    per_device: int
    padding: int

    def describe(self) -> str:
        """One line for a run's report, e.g. ``"8 devices, 7,500 examples each"``."""
        device_word = "device" if self.devices == 1 else "devices"
        text = f"{self.devices} {device_word}, {self.per_device:,} examples each"
        if self.padding:
            text += f" (the last {self.padding} padded with examples of weight zero)"
        return text


def split_of(examples: int, devices: int) -> ExampleSplit:
    """The :class:`ExampleSplit` of ``examples`` over ``devices``: padded to a multiple of it.

    Args:
      examples: how many examples (a positive integer).
      devices: how many devices (a positive integer).

    Returns:
      The :class:`ExampleSplit`.

    Raises:
      ValueError: naming the argument that is not a positive integer.
    """
    examples = checks.positive_int(examples, "examples")
    devices = checks.positive_int(devices, "devices")
    per_device = -(-examples // devices)
    return ExampleSplit(devices=devices, examples=examples, per_device=per_device,
                 padding=per_device * devices - examples)


def shard_examples(mesh: Mesh, *arrays):
    """Place arrays split along their first axis (the examples) over ``mesh``.

    Every process passes the same full host arrays (each host holds the
    whole data); each device receives only its slice. When the count is not a multiple of the mesh's size, the arrays
    are padded with zeros and a weight array marks the real examples.

    Args:
      mesh: from :func:`make_mesh`.
      *arrays: NumPy arrays (or arrays this process can read whole) with the
        same first dimension.

    Returns:
      ``(sharded_arrays, weights, split)``: a tuple of the arrays on the
      mesh, ``weights`` (None when nothing was padded, else a float32 array
      of ones and zeros, sharded the same way), and the :class:`ExampleSplit`.

    Raises:
      ValueError: when no array is given or their first dimensions differ.
    """
    if not arrays:
        raise ValueError("shard_examples needs at least one array")
    arrays = [np.asarray(array) for array in arrays]
    counts = {len(array) for array in arrays}
    if len(counts) != 1:
        raise ValueError(f"the arrays must have the same number of examples, got "
                         f"{[len(array) for array in arrays]}")
    split = split_of(counts.pop(), mesh.size)
    weights = None
    if split.padding:
        weights = np.concatenate([np.ones(split.examples, np.float32),
                                  np.zeros(split.padding, np.float32)])
        arrays = [np.concatenate([array, np.zeros((split.padding, *array.shape[1:]),
                                                  array.dtype)]) for array in arrays]
    def place(array):
        return _place(mesh, PartitionSpec(AXIS), array)

    return (tuple(place(array) for array in arrays),
            None if weights is None else place(weights), split)


def _place(mesh: Mesh, spec: PartitionSpec, array: np.ndarray) -> jax.Array:
    """``array`` on the mesh's devices by ``spec``; each device receives only its part.

    A mesh of JAX's default device alone places the array as JAX places any
    array it is given (on that device, free to move): the loops' compiled
    programs then meet the same placements on their first call as on later
    ones (a mix would compile them again), and compute what they computed
    before meshes, bit for bit.
    """
    if mesh.size == 1 and mesh.devices.flat[0] == jax.devices()[0]:
        return jax.device_put(array)
    return jax.make_array_from_callback(array.shape, NamedSharding(mesh, spec),
                                        lambda index: array[index])


def replicate(mesh: Mesh, tree):
    """A whole copy of every array in ``tree`` on every device of ``mesh``.

    Args:
      mesh: from :func:`make_mesh`.
      tree: a pytree of arrays, the same in every process.

    Returns:
      The same pytree, each leaf a JAX array replicated over the mesh.
    """
    return jax.tree.map(lambda leaf: _place(mesh, PartitionSpec(), np.asarray(leaf)), tree)


def to_host(tree):
    """NumPy copies of the arrays in ``tree``, each replicated or held whole by this process.

    Args:
      tree: a pytree of JAX arrays, each replicated over the mesh or fully
        held by this process's devices.

    Returns:
      The same pytree of NumPy arrays (a replicated array is read from this
      process's first copy).

    Raises:
      ValueError: for an array split over devices of other processes, which
        this process cannot read whole.
    """
    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError(f"an array of shape {leaf.shape} is split over the devices of "
                                 f"several processes ({leaf.sharding}): this process holds "
                                 "only part of it")
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)

