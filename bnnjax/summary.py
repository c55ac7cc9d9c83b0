"""Memory summary of a binary model: bits at deploy time, not at training.

``flax``'s ``tabulate`` counts a binarized kernel at 32 bits, because during
training it is a float latent weight. Deployed, the same kernel costs 1 bit
per weight. :func:`summary` reports both, per parameter and in total, with
the compression ratio against storing every value as float32, as Larq's
model summary does.

Counting rules (stated once, used everywhere):

* A binary kernel (linen ``latent_kernel``, nnx ``LatentParam``, or a leaf
  labelled ``"binary"``) deploys at 1 bit per weight, packed 8 per byte
  along its input-feature axis (the second to last axis of a flax kernel,
  padded to a multiple of 8): ``deploy_bytes = prod(other axes) *
  ceil(in / 8)``. Its per-channel scale is not counted: it is derived from
  the latent weights and folds into a following batch norm at export.
* Every other value (biases, batch-norm parameters and statistics, real
  layers) deploys in its own dtype.
* ``train_bytes`` is what the values occupy while training (their dtype).
* ``float32_bytes`` counts every value at 32 bits; the compression ratio is
  ``float32_bytes / deploy_bytes``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from bnnjax.optim import BINARY, REAL, binary_param_labels

__all__ = ["ModelSummary", "ParamSummary", "path_names", "summary"]


@dataclasses.dataclass(frozen=True)
class ParamSummary:
    """One row of the summary: a parameter or state tensor.

    Attributes:
      layer: path of the layer that owns it (``"Dense_0"``, ``"block/conv"``).
      name: its name in the layer (``"latent_kernel"``, ``"bias"``, ...).
      collection: ``"params"`` or the state collection (``"batch_stats"``).
      shape: its shape.
      kind: ``"binary"`` or ``"real"``.
      count: number of values.
      deploy_bits: bits per value when deployed (1 for binary kernels).
      train_bytes: bytes while training (its dtype).
      deploy_bytes: bytes when deployed (binary: packed along the input axis).
      float32_bytes: bytes at 32 bits per value.
    """

    layer: str
    name: str
    collection: str
    shape: tuple[int, ...]
    kind: str
    count: int
    deploy_bits: int
    train_bytes: int
    deploy_bytes: int
    float32_bytes: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Per-tensor rows and totals; ``str()`` renders the table.

    Attributes:
      rows: one :class:`ParamSummary` per tensor, in tree order.
    """

    rows: tuple[ParamSummary, ...]

    @property
    def binary_params(self) -> int:
        """Number of binary (1-bit at deploy) values."""
        return sum(r.count for r in self.rows if r.kind == BINARY)

    @property
    def real_params(self) -> int:
        """Number of real-valued values (parameters and state)."""
        return sum(r.count for r in self.rows if r.kind == REAL)

    @property
    def train_bytes(self) -> int:
        """Total bytes while training."""
        return sum(r.train_bytes for r in self.rows)

    @property
    def deploy_bytes(self) -> int:
        """Total bytes deployed."""
        return sum(r.deploy_bytes for r in self.rows)

    @property
    def float32_bytes(self) -> int:
        """Total bytes with every value at 32 bits."""
        return sum(r.float32_bytes for r in self.rows)

    @property
    def compression_ratio(self) -> float:
        """``float32_bytes / deploy_bytes`` (0 for an empty model)."""
        if self.deploy_bytes == 0:
            return 0.0
        return self.float32_bytes / self.deploy_bytes

    def to_dict(self) -> dict[str, Any]:
        """Rows and totals as JSON-ready builtins."""
        return {
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "binary_params": self.binary_params,
            "real_params": self.real_params,
            "train_bytes": self.train_bytes,
            "deploy_bytes": self.deploy_bytes,
            "float32_bytes": self.float32_bytes,
            "compression_ratio": self.compression_ratio,
        }

    def __str__(self) -> str:
        header = (
            "layer",
            "param",
            "shape",
            "kind",
            "count",
            "bits",
            "train bytes",
            "deploy bytes",
        )
        body = [
            (
                r.layer,
                r.name if r.collection == "params" else f"{r.name} (state)",
                "x".join(map(str, r.shape)) or "scalar",
                r.kind,
                f"{r.count:,}",
                str(r.deploy_bits),
                f"{r.train_bytes:,}",
                f"{r.deploy_bytes:,}",
            )
            for r in self.rows
        ]
        total = (
            "total",
            "",
            "",
            f"{self.binary_params:,} binary",
            f"{self.binary_params + self.real_params:,}",
            "",
            f"{self.train_bytes:,}",
            f"{self.deploy_bytes:,}",
        )
        table = [header, *body, total]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        numeric = {4, 5, 6, 7}

        def line(row: Sequence[str]) -> str:
            cells = [
                cell.rjust(w) if i in numeric else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(header))
        lines = [line(header), rule, *map(line, body), rule, line(total)]
        lines.append(
            f"float32 bytes: {self.float32_bytes:,}; deploy bytes: "
            f"{self.deploy_bytes:,}; compression: "
            f"{self.compression_ratio:.2f}x; real values: "
            f"{self.real_params:,}"
        )
        return "\n".join(lines)


def path_names(path: Iterable[object]) -> list[str]:
    """Names of a pytree key path's entries (dict keys, attributes, indices)."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return names


def _row(
    path: jax.tree_util.KeyPath[Any], value: Any, kind: str, collection: str
) -> ParamSummary:
    names = path_names(path)
    shape = tuple(int(d) for d in np.shape(value))
    count = math.prod(shape)
    itemsize = np.dtype(value.dtype).itemsize
    if kind == BINARY:
        if len(shape) < 2:
            raise ValueError(
                f"summary: {'/'.join(names)} is labelled binary but has shape "
                f"{shape}; binary kernels have rank >= 2 (..., in, out)."
            )
        n_in = shape[-2]
        deploy_bytes = (count // n_in) * math.ceil(n_in / 8)
        deploy_bits = 1
    else:
        deploy_bytes = count * itemsize
        deploy_bits = itemsize * 8
    return ParamSummary(
        layer="/".join(names[:-1]),
        name=names[-1] if names else "",
        collection=collection,
        shape=shape,
        kind=kind,
        count=count,
        deploy_bits=deploy_bits,
        train_bytes=count * itemsize,
        deploy_bytes=deploy_bytes,
        float32_bytes=count * 4,
    )


def _is_variable(value: object) -> bool:
    return isinstance(value, nnx.Variable)


def summary(variables: Any, *, labels: Any = None) -> ModelSummary:
    """Summarizes a model's memory at training and at deploy time.

    Args:
      variables: a linen variables dict (``{"params": ..., "batch_stats":
        ...}``), a bare linen parameter tree, an ``nnx.Module`` or an nnx
        ``State``. Random-number state (nnx ``RngState``) is skipped.
      labels: optional tree of ``"binary"``/``"real"`` labels for the
        parameters (the ``"params"`` collection, or the nnx ``Param``
        state), e.g. from a converted model whose kernels keep the name
        ``kernel``. Default: :func:`bnnjax.binary_param_labels`.

    Returns:
      A :class:`ModelSummary`; ``print(summary(...))`` shows the table.

    Raises:
      TypeError: for anything that is not a variables tree or nnx model.
      ValueError: if a label is not ``"binary"``/``"real"`` or the labels'
        structure does not match the parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> s = summary({"params": {"dense": {
      ...     "latent_kernel": jnp.ones((784, 256)), "bias": jnp.ones(256)}}})
      >>> s.binary_params, s.deploy_bytes
      (200704, 26112)
    """
    if isinstance(variables, nnx.Module):
        variables = nnx.state(variables)
    if isinstance(variables, nnx.State):
        return _summary_nnx(variables, labels)
    if not isinstance(variables, dict) and not hasattr(variables, "items"):
        raise TypeError(
            "summary expects linen variables (a dict such as "
            "{'params': ..., 'batch_stats': ...}), an nnx.Module or an nnx "
            f"State, got {type(variables).__name__}."
        )
    collections = dict(variables)
    if "params" not in collections:
        collections = {"params": collections}
    rows: list[ParamSummary] = []
    for collection, tree in collections.items():
        if collection == "params":
            tree_labels = (
                binary_param_labels(tree) if labels is None else labels
            )
        else:
            tree_labels = jax.tree.map(lambda _: REAL, tree)
        rows.extend(_rows_for(tree, tree_labels, collection))
    return ModelSummary(rows=tuple(rows))


def _rows_for(
    tree: Any, tree_labels: Any, collection: str
) -> list[ParamSummary]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    try:
        treedef = jax.tree_util.tree_structure(tree)
        # jaxlib has no type stubs: mypy cannot see PyTreeDef's methods.
        label_leaves = treedef.flatten_up_to(tree_labels)  # type: ignore[attr-defined]
    except (ValueError, TypeError) as error:
        raise ValueError(
            "summary: labels do not match the structure of the "
            f"{collection!r} tree: {error}"
        ) from None
    rows = []
    for (path, value), kind in zip(leaves, label_leaves, strict=True):
        if kind not in (BINARY, REAL):
            raise ValueError(
                f"summary: label {kind!r} at {'/'.join(path_names(path))} "
                f"is not {BINARY!r} or {REAL!r}."
            )
        rows.append(_row(path, value, kind, collection))
    return rows


def _summary_nnx(state: nnx.State[Any, Any], labels: Any) -> ModelSummary:
    params = nnx.filter_state(state, nnx.Param)
    if labels is None:
        labels = binary_param_labels(params)
    param_rows = _rows_for(
        jax.tree.map(lambda v: v[...], params, is_leaf=_is_variable),
        labels,
        "params",
    )
    rows = list(param_rows)
    others = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_variable)[
        0
    ]
    for path, variable in others:
        if isinstance(variable, (nnx.Param, nnx.RngState)):
            continue
        value = variable[...] if _is_variable(variable) else variable
        if isinstance(variable, nnx.BatchStat):
            collection = "batch_stats"
        elif _is_variable(variable):
            collection = type(variable).__name__
        else:
            collection = "state"
        rows.append(_row(path, value, REAL, collection))
    return ModelSummary(rows=tuple(rows))
