"""Data-parallel training on many devices and hosts, with ``jax.sharding``.

bnnjax trains data-parallel on a one-axis device mesh named
:data:`DATA_AXIS`: every device holds a replica of the parameters, batch
statistics and optimizer state, each device gets ``B / n`` examples of
the global batch of ``B``, and ``jax.jit`` (XLA's SPMD partitioner)
inserts the all-reduce of the gradients. Any mean over the batch axis
inside the jitted step (the loss, batch norm's statistics) is a mean
over the *global* batch, so ``n`` devices compute what one device
computes on the whole batch, up to the order of floating-point sums.

Many hosts use JAX's own multi-controller runtime: each host runs the same
program after :func:`initialize`, sees every device of the job in
``jax.devices()`` and feeds only its own devices. A host builds its part
of a global batch from the rows it owns (:func:`host_rows`) and joins the
parts with ``jax.make_array_from_process_local_data``.

* :func:`initialize`: ``jax.distributed.initialize`` from arguments or
  environment variables, or nothing for a single process.
* :func:`data_mesh`: the mesh of ``n`` devices (default: all of them).
* :func:`replicated`, :func:`batch_sharding`: the two shardings used.
* :func:`host_rows`, :func:`global_batch`: a host's share of a batch and
  the global array built from the shares.
* :func:`is_primary`, :func:`barrier`: process 0 writes files; every
  process waits at a barrier before anyone writes.

Nothing here runs at import time.

References:
  JAX documentation, "Distributed arrays and automatic parallelization"
  and "Multi-process environments" (``jax.distributed``,
  ``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bnnjax._validate import is_int

__all__ = [
    "COORDINATOR_ENV",
    "DATA_AXIS",
    "NUM_PROCESSES_ENV",
    "PROCESS_ID_ENV",
    "barrier",
    "batch_sharding",
    "data_mesh",
    "global_batch",
    "host_rows",
    "initialize",
    "is_primary",
    "replicated",
]

DATA_AXIS = "data"
"""Name of the mesh axis the batch is split over."""

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
"""Environment variable with the coordinator's ``host:port`` (JAX's own)."""

NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
"""Environment variable with the number of processes (read by bnnjax)."""

PROCESS_ID_ENV = "JAX_PROCESS_ID"
"""Environment variable with this process's id (read by bnnjax)."""


def _env_int(name: str, environ: Mapping[str, str]) -> int | None:
    text = environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"Environment variable {name}={text!r}; expected an integer."
        ) from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Joins a multi-process job with ``jax.distributed.initialize``.

    Each setting comes from its argument, else from an environment
    variable: :data:`COORDINATOR_ENV` (``JAX_COORDINATOR_ADDRESS``, which
    JAX itself reads too), :data:`NUM_PROCESSES_ENV`
    (``JAX_NUM_PROCESSES``) and :data:`PROCESS_ID_ENV`
    (``JAX_PROCESS_ID``). With none of the three set this is a single
    process and nothing is done. With a coordinator address but no
    process count or id, JAX detects them on the clusters it knows
    (SLURM, Open MPI, Kubernetes, Cloud TPU).

    Call it first, before anything runs on a device (JAX fixes its
    devices when the first computation starts). Calling it again once
    initialized checks that the settings agree and does nothing.

    On CPU, JAX's default cross-process collectives (``gloo``) are used.

    Args:
      coordinator_address: ``host:port`` of process 0, the same on every
        process (e.g. ``"10.0.0.1:1234"``).
      num_processes: number of processes in the job (>= 1).
      process_id: this process's id, in ``[0, num_processes)``.
      environ: where to read the variables (default ``os.environ``).

    Returns:
      ``True`` if the process is part of a multi-process job (initialized
      now or before), ``False`` for a single process.

    Raises:
      ValueError: for a process count or id without a coordinator
        address, invalid values, settings that disagree with an earlier
        initialization, or settings JAX could not complete.
      RuntimeError: from JAX, when called after a computation already ran.
    """
    environ = os.environ if environ is None else environ
    if coordinator_address is None:
        coordinator_address = environ.get(COORDINATOR_ENV) or None
    if num_processes is None:
        num_processes = _env_int(NUM_PROCESSES_ENV, environ)
    if process_id is None:
        process_id = _env_int(PROCESS_ID_ENV, environ)
    if coordinator_address is not None and (
        not isinstance(coordinator_address, str)
        or ":" not in coordinator_address
    ):
        raise ValueError(
            f"coordinator_address={coordinator_address!r}; expected "
            "'host:port' of process 0, e.g. '10.0.0.1:1234'."
        )
    if num_processes is not None and (
        not is_int(num_processes) or num_processes < 1
    ):
        raise ValueError(
            f"num_processes={num_processes!r}; expected an int >= 1."
        )
    if process_id is not None and (not is_int(process_id) or process_id < 0):
        raise ValueError(f"process_id={process_id!r}; expected an int >= 0.")
    if (
        num_processes is not None
        and process_id is not None
        and process_id >= num_processes
    ):
        raise ValueError(
            f"process_id={process_id} with num_processes={num_processes}; "
            f"expected 0 <= process_id < {num_processes}."
        )

    if jax.distributed.is_initialized():
        for name, want, have in (
            ("num_processes", num_processes, jax.process_count()),
            ("process_id", process_id, jax.process_index()),
        ):
            if want is not None and want != have:
                raise ValueError(
                    f"{name}={want}, but jax.distributed is already "
                    f"initialized with {name}={have}."
                )
        return True
    if coordinator_address is None:
        if num_processes is not None or process_id is not None:
            raise ValueError(
                f"num_processes={num_processes} and process_id={process_id} "
                "need a coordinator address: pass coordinator_address "
                f"(or set {COORDINATOR_ENV}) to 'host:port' of process 0."
            )
        return False
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=None if num_processes is None else int(num_processes),
            process_id=None if process_id is None else int(process_id),
        )
    except ValueError as e:
        raise ValueError(
            f"jax.distributed.initialize with coordinator_address="
            f"{coordinator_address!r}, num_processes={num_processes}, "
            f"process_id={process_id} failed: {e} Outside a cluster JAX "
            f"detects, give all three (or set {COORDINATOR_ENV}, "
            f"{NUM_PROCESSES_ENV}, {PROCESS_ID_ENV})."
        ) from e
    return True


def data_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh named :data:`DATA_AXIS` over ``devices`` devices.

    ``None`` uses every device of the job (``jax.devices()``, all hosts).
    In a single process, ``n`` uses the first ``n`` devices. With ``P``
    processes, ``n`` must be a multiple of ``P``; each process contributes
    its first ``n / P`` local devices, so every host feeds the same number
    of devices. Devices are ordered by process, then by id, so a host's
    devices hold one contiguous block of the batch.

    The axis type is ``Auto``: the jitted step is partitioned by XLA's
    sharding propagation from the input shardings, so model code written
    for one device runs unchanged.

    Args:
      devices: number of devices, or ``None`` for all.

    Returns:
      A :class:`jax.sharding.Mesh` with one axis of size ``devices``.

    Raises:
      ValueError: if ``devices`` is not a positive int, exceeds the
        devices available, or does not split evenly over the processes.
    """
    available = jax.devices()
    processes = jax.process_count()
    if devices is None:
        chosen = list(available)
    else:
        if not is_int(devices) or devices < 1:
            raise ValueError(
                f"devices={devices!r}; expected a positive int, or None for "
                f"all {len(available)} devices."
            )
        devices = int(devices)
        if devices > len(available):
            raise ValueError(
                f"devices={devices}, but only {len(available)} "
                f"{available[0].platform} device(s) are available; accepted: "
                f"1 to {len(available)}, or None for all."
            )
        if devices % processes:
            raise ValueError(
                f"devices={devices} does not split over the {processes} "
                f"processes; accepted: a multiple of {processes} up to "
                f"{len(available)}, or None for all."
            )
        per_process = devices // processes
        chosen = []
        for p in range(processes):
            local = [d for d in available if d.process_index == p]
            if len(local) < per_process:
                raise ValueError(
                    f"devices={devices} needs {per_process} devices on each "
                    f"of the {processes} processes, but process {p} has "
                    f"{len(local)}."
                )
            chosen.extend(local[:per_process])
    chosen.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(chosen), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device of ``mesh`` holds the whole array (``P()``)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Splits axis ``batch_axis`` over :data:`DATA_AXIS`; others replicated.

    Args:
      mesh: a mesh from :func:`data_mesh`.
      batch_axis: the example axis, e.g. ``1`` for ``(seeds, batch, ...)``.

    Returns:
      ``NamedSharding(mesh, P(None, ..., "data"))``.
    """
    if not is_int(batch_axis) or batch_axis < 0:
        raise ValueError(
            f"batch_axis={batch_axis!r}; expected a non-negative int."
        )
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def _indices(
    sharding: jax.sharding.Sharding, global_shape: tuple[int, ...]
) -> Iterable[tuple[slice, ...]]:
    """The index of every block this process's devices hold."""
    # jax types the entries Optional, but fills every one.
    return cast(
        Iterable[tuple[slice, ...]],
        sharding.addressable_devices_indices_map(global_shape).values(),
    )


def host_rows(
    sharding: jax.sharding.Sharding, global_shape: Sequence[int], axis: int
) -> slice:
    """The rows along ``axis`` that this process's devices hold.

    For :func:`batch_sharding` on a mesh from :func:`data_mesh`, process
    ``p`` of ``P`` holds the ``p``-th contiguous block of ``B / P`` rows.

    Args:
      sharding: the global array's sharding.
      global_shape: the global array's shape.
      axis: the axis to slice (the batch axis).

    Returns:
      ``slice(start, stop)`` into the global array along ``axis``.

    Raises:
      ValueError: if this process's rows are not one contiguous block
        (a mesh not built by :func:`data_mesh`).
    """
    global_shape = tuple(global_shape)
    size = global_shape[axis]
    found: set[tuple[int, int]] = set()
    for index in _indices(sharding, global_shape):
        start, stop, _ = index[axis].indices(size)
        found.add((start, stop))
    spans = sorted(found)
    start, stop = spans[0][0], spans[-1][1]
    covered = start
    for a, b in spans:
        if a > covered:
            break
        covered = max(covered, b)
    if covered != stop:
        raise ValueError(
            f"This process's devices hold rows {spans} of axis {axis}, not one "
            "contiguous block; build the mesh with bnnjax.distributed."
            "data_mesh."
        )
    return slice(start, stop)


def global_batch(
    sharding: jax.sharding.Sharding,
    local_data: np.ndarray | jax.Array,
    global_shape: Sequence[int],
) -> jax.Array:
    """A global array from this process's rows (:func:`host_rows`).

    Thin wrapper of ``jax.make_array_from_process_local_data`` that checks
    the local shape first.

    Args:
      sharding: the global sharding, e.g. :func:`batch_sharding`.
      local_data: this process's block of the global array.
      global_shape: the global array's shape.

    Returns:
      The global ``jax.Array`` (in a single process: ``local_data`` placed
      on the mesh).

    Raises:
      ValueError: if ``local_data`` does not have the shape of this
        process's block.
    """
    global_shape = tuple(int(n) for n in global_shape)
    local_data = np.asarray(local_data)
    indices = _indices(sharding, global_shape)
    want = []
    for axis, size in enumerate(global_shape):
        spans = {index[axis].indices(size)[:2] for index in indices}
        want.append(max(b for _, b in spans) - min(a for a, _ in spans))
    if local_data.shape != tuple(want):
        raise ValueError(
            f"global_batch: local data has shape {local_data.shape}; this "
            f"process holds a block of shape {tuple(want)} of the global "
            f"shape {global_shape}."
        )
    return jax.make_array_from_process_local_data(
        sharding, local_data, global_shape
    )


def is_primary() -> bool:
    """``True`` in process 0, the one that writes files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name``.

    Does nothing in a single process.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
