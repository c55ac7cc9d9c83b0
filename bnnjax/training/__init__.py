"""The training harness behind :mod:`bnnjax.train`, one module per idea.

* :mod:`~bnnjax.training.config`: :class:`~bnnjax.train.TrainConfig`, a
  frozen, validated description of one run, and its named checks.
* :mod:`~bnnjax.training.step`: the train state, its initialisation and
  the jit-able train and evaluation steps.
* :mod:`~bnnjax.training.diagnostics`: per-epoch diagnostics of latent
  kernels (flip ratio, gradient fraction, statistics).
* :mod:`~bnnjax.training.epoch`: one epoch of sharded batches and steps,
  with per-step reports.
* :mod:`~bnnjax.training.rundir`: the run directory (default name, resume
  checks, loading a checkpoint).
* :mod:`~bnnjax.training.results`: the results dict of a finished run.
* :mod:`~bnnjax.training.loop`: :func:`~bnnjax.train.run`, the whole job,
  as named steps.

Import the public names from :mod:`bnnjax.train`.
"""
