"""Packing a trained model: :func:`pack_model` and :func:`export_model`.

Dispatches a reference architecture to its compiled program
(:mod:`bnnjax.export._programs`) and any other flax model to the packing
of models of your own (:mod:`bnnjax.export._own_models`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as flax_linen
from flax import nnx

from bnnjax.export._format import save
from bnnjax.export._own_models import _pack_generic
from bnnjax.export._programs import _is_reference, _pack_reference
from bnnjax.export._schema import (
    PackedModel,
    PackedSizes,
    _check_metadata,
    _json_kwargs,
)


def pack_model(
    model: Any,
    variables: Mapping[str, Any] | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    example_inputs: Any = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> PackedModel:
    """Packs a trained model for 1-bit inference.

    Two kinds of model:

    * **Reference architectures** (:class:`bnnjax.models.linen.BinaryMLP`,
      :class:`~bnnjax.models.linen.BinaryNetCNN`,
      :class:`~bnnjax.models.linen.BiRealResNet`,
      :class:`~bnnjax.models.linen.ReActNet`, float32, or the
      :mod:`bnnjax.models.nnx` model of the same name): the file holds a
      program of ops, with batch norm and ``sign`` folded into thresholds
      (ReActNet's RSign into ``x >= beta``), that :func:`predict` runs with
      nothing but the file (format version 1).
    * **Models of your own** (format version 2): any linen or nnx model
      whose binary layers are :mod:`bnnjax.nn` layers (``BinaryDense``/
      ``BinaryLinear``, ``BinaryConv``, grouped and depthwise included) or
      ``Dense``/``Conv`` layers converted by :func:`bnnjax.binarize_model`.
      The file holds those layers packed (signs, scales, biases) and every
      other parameter and batch statistic; Python code is never stored, so
      :func:`predict` needs the model definition (``model=``) and runs its
      code with each binary layer computed from the packed arrays. Binary
      layers take real inputs or plain ``sign`` activations
      (``input_binarizer`` with no scale and no centring); other layers run
      as written.

    Kernel binarizers must be deterministic with one scale per tensor or
    per output channel; every array must be float32.

    Args:
      model: the model (linen: unbound; nnx: holding its trained
        variables).
      variables: for a linen model, ``{"params": ..., ...}`` as returned
        by ``model.init`` and updated by training (every collection is
        stored); for an nnx model, ``None``.
      metadata: JSON-serialisable facts to keep in the header under
        ``"metadata"`` (e.g. the dataset and training run); not used for
        inference.
      example_inputs: a linen model of your own only: one call's
        positional inputs (an array, a ``jax.ShapeDtypeStruct`` or a tuple
        of them), traced abstractly once to find the binary layers in call
        order.
      call_kwargs: a model of your own only: JSON keyword arguments of
        every inference call, stored in the file (e.g. ``{"train":
        False}``); nnx models are also switched to ``eval()``.

    Returns:
      The :class:`PackedModel`; :func:`predict` on it matches
      ``model.apply(variables, x, train=False)`` (reference architectures)
      or ``model.apply(variables, x, **call_kwargs)`` (models of your own).

    Raises:
      TypeError: for an unsupported model, a missing ``example_inputs``, or
        ``metadata``/``call_kwargs`` that are not JSON objects.
      ValueError: for unsupported settings, mismatched variables or
        non-finite values, naming the layer.
    """
    metadata = _check_metadata(metadata)
    if not _is_reference(model):
        if not isinstance(model, (nnx.Module, flax_linen.Module)):
            raise TypeError(
                "pack_model expects a flax linen or nnx model, got "
                f"{type(model).__name__}."
            )
        return _pack_generic(
            model,
            variables,
            example_inputs,
            _json_kwargs(call_kwargs),
            metadata,
        )
    if example_inputs is not None or call_kwargs is not None:
        raise ValueError(
            f"{type(model).__name__} is a reference architecture: "
            "example_inputs and call_kwargs apply to models of your own."
        )
    return _pack_reference(model, variables, metadata)


def export_model(
    model: Any,
    variables: Mapping[str, Any] | None,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    example_inputs: Any = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> PackedSizes:
    """:func:`pack_model` then :func:`save`; returns the sizes.

    Args:
      model: the linen or nnx model (see :func:`pack_model`).
      variables: a linen model's trained variables; ``None`` for an nnx
        model.
      path: destination file.
      metadata: JSON facts stored in the header (see :func:`pack_model`).
      example_inputs: see :func:`pack_model` (linen models of your own).
      call_kwargs: see :func:`pack_model` (models of your own).

    Returns:
      :class:`PackedSizes` with the file's bytes and the float32 bytes of
      ``variables``.
    """
    packed = pack_model(
        model,
        variables,
        metadata=metadata,
        example_inputs=example_inputs,
        call_kwargs=call_kwargs,
    )
    return PackedSizes(save(packed, path), packed.float32_bytes)
