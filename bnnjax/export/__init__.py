"""1-bit export: a trained model in one self-describing file, and inference.

:func:`pack_model` turns a trained reference model (``BinaryMLP``,
``BinaryNetCNN``, ``BiRealResNet`` or ``ReActNet`` from
:mod:`bnnjax.models.linen` with its ``{"params", "batch_stats"}``, or the
same from :mod:`bnnjax.models.nnx`) into a :class:`PackedModel`: binary
kernels packed 32 signs per ``uint32`` word, per-channel kernel scales, the
real layers' parameters, batch norm (and ReActNet's learned RSign
thresholds) folded into thresholds where that is exact,
and a small program (a list of ops) that :func:`predict` runs with nothing
but those arrays: no latent weights, no flax module. :func:`save` and
:func:`load` write and read it; :func:`export_model` does ``pack_model`` +
``save``.

Models of your own (any linen or nnx model whose binary layers are
:mod:`bnnjax.nn` layers, grouped convolutions included, or layers converted
by :func:`bnnjax.binarize_model`) pack their binary layers the same way and
keep every other parameter and batch statistic; since a file never holds
code, :func:`predict` runs the model's own code (``model=``) with each
binary layer computed from the packed arrays.

The file format (prefix, JSON header, aligned arrays, SHA-256 trailer; its
versions 1 and 2) and what agrees bit for bit with the float model are
specified in :doc:`/guides/file_format`.

Example:

  >>> import os, tempfile
  >>> import jax
  >>> from bnnjax import export
  >>> from bnnjax.models import linen as models
  >>> model = models.BinaryMLP(hidden=(32,))
  >>> images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
  >>> variables = model.init(jax.random.key(0), images, train=False)
  >>> with tempfile.TemporaryDirectory() as tmp:
  ...     path = os.path.join(tmp, "mlp.bnnjax")
  ...     sizes = export.export_model(model, variables, path)
  ...     packed = export.load(path)  # checks magic, version, checksum
  >>> logits = export.predict(packed, images)
  >>> logits.shape
  (4, 10)
  >>> bool((logits == model.apply(variables, images, train=False)).all())
  True
  >>> sizes.compression_ratio > 1
  True
"""

from bnnjax.export import _schema
from bnnjax.export._format import file_sizes as file_sizes
from bnnjax.export._format import load as load
from bnnjax.export._format import save as save
from bnnjax.export._interpreter import predict as predict
from bnnjax.export._pack import export_model as export_model
from bnnjax.export._pack import pack_model as pack_model
from bnnjax.export._schema import PackedModel as PackedModel
from bnnjax.export._schema import PackedSizes as PackedSizes

MAGIC = _schema.MAGIC
"""First 8 bytes of every packed model file."""

FORMAT_VERSION = _schema.FORMAT_VERSION
"""Newest version of the file format this package writes and reads.

Version 1 (reference architectures: a program of ops) is still written for
those models, so older bnnjax reads them; version 2 adds models of your own
(packed layers run by the model's code). Both are read.
"""

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PackedModel",
    "PackedSizes",
    "export_model",
    "file_sizes",
    "load",
    "pack_model",
    "predict",
    "save",
]
