"""Training one comparison candidate: every seed at once, measured per epoch.

:func:`train_candidate` trains one configuration (a preset, its learning
rates and the shared budget) for all seeds together, with ``jax.vmap`` over
a seed axis, using :mod:`bnnjax.train`'s step, evaluation and diagnostics.
After every epoch it records the validation accuracy and loss, the mean
training loss, the sign-flip ratio of the binary kernels and the seconds the
epoch's steps took; the test split is evaluated once, at the end, and only
when asked, with the exact count of correct predictions per seed. The step
is compiled ahead of time and its compilation timed apart.
:func:`estimate_memory` says, without compiling or allocating, how much
memory such a run needs per seed. :mod:`bnnjax.compare` runs the protocol
around it.
"""

from __future__ import annotations

import math
import time
import typing
from collections.abc import Callable, Sequence
from typing import Any, cast

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import data as data_lib
from bnnjax import train as train_lib
from bnnjax.nn import _precision
from bnnjax.nn.functional import LATENT_KERNEL, patches_conv_is_faster
from bnnjax.presets import Preset
from bnnjax.training import step as step_lib


class Data(typing.NamedTuple):
    """The examples of a comparison: training, validation and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val: data_lib.Examples
    test: data_lib.Examples
    num_classes: int


def _signs_fn(preset: Preset) -> Callable[[Any], Any]:
    binarizer = preset.kernel_binarizer
    return jax.jit(
        jax.vmap(
            lambda p: train_lib.kernel_signs(
                train_lib.latent_kernels(p), binarizer
            )
        )
    )


_flips = jax.jit(jax.vmap(lambda a, b: train_lib.flip_ratio(a, b)[0]))


def train_candidate(
    config: train_lib.TrainConfig,
    preset: Preset,
    data: Data,
    *,
    seeds: Sequence[int],
    epochs: int,
    learning_rate: float,
    real_learning_rate: float,
    evaluate_test: bool,
) -> dict[str, Any]:
    """Trains one configuration for every seed at once; never prints.

    Returns:
      :class:`RunResult`'s measured fields: the per-epoch curves, the
      compilation time and, with ``evaluate_test``, the test metrics.
    """
    seeds = list(seeds)
    steps_per_epoch = data_lib.num_batches(
        len(data.train_labels), batch_size=config.batch_size
    )
    total_steps = epochs * steps_per_epoch
    model, state, step, compile_seconds = _compile_candidate(
        config,
        preset,
        data,
        seeds=seeds,
        learning_rate=learning_rate,
        real_learning_rate=real_learning_rate,
        total_steps=total_steps,
    )
    eval_step = train_lib.make_eval_step(
        model, loss=config.loss_fn(train=False)
    )
    signs_fn = _signs_fn(preset) if preset.binary else None
    signs = signs_fn(state.params) if signs_fn else None
    curves = _Curves(len(seeds), with_flips=signs_fn is not None)
    done = 0
    for epoch in range(epochs):
        state, losses, seconds, done = _train_epoch(
            step, state, config, data, seeds, epoch, done, total_steps
        )
        loss, accuracy = train_lib.evaluate(
            eval_step,
            state,
            data.val.images,
            data.val.labels,
            batch_size=config.eval_batch_size,
            progress=min(done / total_steps, 1.0),
        )
        ratio = None
        if signs_fn is not None:
            new_signs = signs_fn(state.params)
            ratio = np.asarray(_flips(signs, new_signs))
            signs = new_signs
        curves.add(epoch, seconds, losses, loss, accuracy, ratio)

    test: dict[str, Any] = dict.fromkeys(
        ("test_accuracy", "test_loss", "test_correct", "test_total")
    )
    if evaluate_test:
        counts = step_lib.evaluate_counts(
            eval_step,
            state,
            data.test.images,
            data.test.labels,
            batch_size=config.eval_batch_size,
            progress=1.0,
        )
        test = {
            "test_accuracy": counts.accuracy.tolist(),
            "test_loss": [float(v) for v in counts.loss],
            "test_correct": counts.correct.tolist(),
            "test_total": counts.total,
        }
    return {
        **curves.fields(),
        "compile_seconds": compile_seconds,
        **test,
    }


def _compile_candidate(
    config: train_lib.TrainConfig,
    preset: Preset,
    data: Data,
    *,
    seeds: list[int],
    learning_rate: float,
    real_learning_rate: float,
    total_steps: int,
) -> tuple[Any, Any, Any, float]:
    """``(model, state, step, compile_seconds)`` of one configuration.

    The state holds one model per seed; the training step is compiled
    ahead of time, and ``compile_seconds`` is that compilation.
    """
    sample = data_lib.to_float(data.train_images[:1])
    model = config.make_model(data.num_classes, preset=preset)
    tx, _ = config.make_tx(
        preset,
        train_lib.abstract_params(model, sample),
        learning_rate=learning_rate,
        real_learning_rate=real_learning_rate,
        total_steps=total_steps,
    )
    state = train_lib.init_state(
        model, tx, seeds, sample, sign_init=preset.sign_init
    )
    first = next(
        data_lib.iterate_batches(
            data.train_images,
            data.train_labels,
            batch_size=config.batch_size,
            seed=seeds,
            epoch=0,
        )
    )
    start = time.perf_counter()
    # make_train_step returns a jax.jit function.
    jitted = cast(
        jax.stages.Wrapped,
        train_lib.make_train_step(
            model,
            tx,
            loss=config.loss_fn(),
            augment=config.make_augmentation(),
            dropout=config.uses_dropout,
            seeds=seeds if config.step_takes_index else None,
        ),
    )
    # With augmentation or dropout the step also takes its index.
    index = (np.int32(0),) if config.step_takes_index else ()
    step = jitted.lower(state, *first, np.float32(0), *index).compile()
    return model, state, step, time.perf_counter() - start


def _train_epoch(
    step: Any,
    state: Any,
    config: train_lib.TrainConfig,
    data: Data,
    seeds: list[int],
    epoch: int,
    done: int,
    total_steps: int,
) -> tuple[Any, np.ndarray, float, int]:
    """One epoch of training steps for every seed.

    Returns:
      ``(state, losses, seconds, done)``: the new state, the training
      losses ``(steps, seeds)``, the wall-clock seconds of the steps and the
      number of steps done so far (``done`` counts on from the argument).
    """
    batches = data_lib.iterate_batches(
        data.train_images,
        data.train_labels,
        batch_size=config.batch_size,
        seed=seeds,
        epoch=epoch,
    )
    losses = []
    start = time.perf_counter()
    for images, labels in data_lib.prefetch_to_device(batches):
        index = (np.int32(done),) if config.step_takes_index else ()
        state, metrics = step(
            state, images, labels, np.float32(done / total_steps), *index
        )
        losses.append(metrics["loss"])
        done += 1
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    return state, np.stack(jax.device_get(losses)), seconds, done


class _Curves:
    """The per-seed, per-epoch measurements of one run, as they accrue."""

    def __init__(self, n: int, *, with_flips: bool):
        self.n = n
        self.val_accuracy: list[list[float]] = [[] for _ in range(n)]
        self.val_loss: list[list[float]] = [[] for _ in range(n)]
        self.train_loss: list[list[float]] = [[] for _ in range(n)]
        self.flip_ratio: list[list[float]] | None = (
            [[] for _ in range(n)] if with_flips else None
        )
        self.diverged: list[int | None] = [None] * n
        self.epoch_seconds: list[float] = []

    def add(
        self,
        epoch: int,
        seconds: float,
        losses: np.ndarray,
        val_loss: Any,
        val_accuracy: Any,
        flip_ratio: np.ndarray | None,
    ) -> None:
        """Records epoch ``epoch`` (0-based); ``losses`` is (steps, seeds)."""
        self.epoch_seconds.append(seconds)
        for i in range(self.n):
            self.val_accuracy[i].append(float(val_accuracy[i]))
            self.val_loss[i].append(float(val_loss[i]))
            self.train_loss[i].append(float(np.mean(losses[:, i])))
            if self.flip_ratio is not None:
                # given whenever flips are tracked
                flips = cast(np.ndarray, flip_ratio)
                self.flip_ratio[i].append(float(flips[i]))
            if self.diverged[i] is None and not np.all(
                np.isfinite(losses[:, i])
            ):
                self.diverged[i] = epoch + 1

    def fields(self) -> dict[str, Any]:
        """The curves under :class:`RunResult`'s field names."""
        return {
            "val_accuracy": self.val_accuracy,
            "val_loss": self.val_loss,
            "train_loss": self.train_loss,
            "flip_ratio": self.flip_ratio,
            "epoch_seconds": self.epoch_seconds,
            "diverged_epoch": self.diverged,
        }


class MemoryEstimate(typing.NamedTuple):
    """Memory one seed of a run needs, in bytes, by where it goes.

    A run of ``n`` seeds needs about ``n * per_seed`` bytes: the seeds are
    trained together (``jax.vmap``), so every term grows with their number.

    Attributes:
      train_step: the training step: its input and output state (held both
        while the step runs), the gradients and updates (as large as the
        state's parameters and optimizer terms), twice the activations of a
        batch (kept for the backward pass, and their gradients) and the
        batch converted to float32.
      evaluation: an evaluation batch: the state and the forward
        activations of ``eval_batch_size`` examples.
      other: the flip-ratio signs (two boolean copies of the kernels), the
        epoch's batch order (``int64`` per training example) and three
        ``uint8`` batches in flight.
    """

    train_step: int
    evaluation: int
    other: int

    @property
    def per_seed(self) -> int:
        """The peak for one seed: the larger step, plus the rest."""
        return max(self.train_step, self.evaluation) + self.other


def _tree_bytes(tree: Any) -> int:
    return sum(
        math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree.leaves(tree)
    )


def activation_bytes(model: Any, sample: jax.Array, batch_size: int) -> int:
    """Bytes of every layer's output for ``batch_size`` examples.

    Found with ``jax.eval_shape`` (nothing is computed): the outputs the
    model's modules return (``capture_intermediates``) in training mode,
    plus the patches matrices of the convolutions that run as patches
    (:func:`_patches_bytes`), which the backward pass keeps.
    """
    variables = jax.eval_shape(
        lambda k: model.init(k, sample, train=False, progress=jnp.float32(0)),
        jax.random.key(0),
    )
    batch = jax.ShapeDtypeStruct((batch_size, *sample.shape[1:]), sample.dtype)

    def forward(v: Any, x: jax.Array) -> Any:
        _, captured = model.apply(
            v,
            x,
            train=True,
            progress=jnp.float32(0),
            capture_intermediates=True,
            mutable=["intermediates", "batch_stats"],
        )
        return captured["intermediates"]

    captured = jax.eval_shape(forward, variables, batch)
    return _tree_bytes(captured) + _patches_bytes(
        variables.get("params", {}),
        captured,
        int8=_int8_patches(model),
        image_features=sample.shape[-1],
    )


def _int8_patches(model: Any) -> bool:
    """Whether ``model``'s binary convolutions with binarized inputs build
    int8 patches (``sign_product_dtype="auto"`` on CPU, exact operands)
    where they have enough input features
    (``_precision.INT8_PATCHES_MIN_FEATURES``)."""
    activation = getattr(model, "activation_binarizer", None)
    kernel = getattr(model, "kernel_binarizer", None)
    if not getattr(model, "binary_activations", True) or kernel is None:
        return False
    return (
        _precision.resolve_sign_product_dtype(
            _precision.AUTO,
            activation,
            kernel,
            jnp.dtype(jnp.float32),
            contraction=1,
            auto_dtype=_precision.conv_sign_product_dtype(
                True, in_features=_precision.INT8_PATCHES_MIN_FEATURES
            ),
        )
        == _precision.INT8
    )


def _patches_bytes(
    params: Any, captured: Any, *, int8: bool = False, image_features: int = 0
) -> int:
    """Bytes of the patches matrices of the binary convolutions.

    A convolution computed as patches (``conv_impl="auto"`` on CPU) keeps
    an ``(out_pixels, taps * in_features)`` matrix per example, ``taps``
    times its input; its size follows from the output's pixels and the
    kernel's shape. With ``int8``, the convolutions whose inputs are not
    the image (``image_features`` channels; their inputs are binarized)
    and for which ``_precision.conv_sign_product_dtype`` takes int8 (enough
    input features) keep it as int8.
    """
    total = 0
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    outputs = flax.traverse_util.flatten_dict(flax.core.unfreeze(captured))
    for path, kernel in flat.items():
        if path[-1] != LATENT_KERNEL or len(kernel.shape) < 3:
            continue
        *taps, in_features, features = kernel.shape
        if not patches_conv_is_faster(
            in_features=in_features, features=features, kernel_size=taps
        ):
            continue
        out = outputs.get((*path[:-1], "__call__"))
        if isinstance(out, tuple) and len(out) == 1:  # the call's returns
            out = out[0]
        if getattr(out, "shape", (None,))[-1] != features:
            continue
        pixels = math.prod(out.shape[:-1])
        in_int8 = (
            int8
            and in_features != image_features
            and _precision.conv_sign_product_dtype(
                True, in_features=in_features
            )
            == _precision.INT8
        )
        itemsize = 1 if in_int8 else out.dtype.itemsize
        total += pixels * math.prod(taps) * in_features * itemsize
    return total


def _eval_batch(config: train_lib.TrainConfig, data: Data) -> int:
    """The evaluation batch :func:`bnnjax.train.evaluate` will use."""
    return min(
        config.eval_batch_size, max(len(data.val.labels), len(data.test.labels))
    )


def run_activations(
    config: train_lib.TrainConfig, preset: Preset, data: Data
) -> tuple[int, int]:
    """Activation bytes of a training batch and of an evaluation batch.

    They depend on the architecture and on whether the method's binary
    convolutions build int8 patches (:func:`_int8_patches`).
    """
    sample = data_lib.to_float(data.train_images[:1])
    model = config.make_model(data.num_classes, preset=preset)
    return (
        activation_bytes(model, sample, config.batch_size),
        activation_bytes(model, sample, _eval_batch(config, data)),
    )


def estimate_memory(
    config: train_lib.TrainConfig,
    preset: Preset,
    data: Data,
    *,
    activations: tuple[int, int] | None = None,
) -> MemoryEstimate:
    """The memory one seed of :func:`train_candidate` needs (no compiling).

    The state's size comes from ``jax.eval_shape`` of its initialisation;
    the activations from :func:`activation_bytes`. Against XLA's compiled
    memory analysis of the same steps (``tests/test_compare_cli.py``) the
    estimate lies within a factor of 2.

    Args:
      config: the shared budget (model, batch sizes).
      preset: the method (its optimizer sets the state's size).
      data: the examples (image shape, split sizes).
      activations: :func:`run_activations` if already known (they depend
        on the architecture only).

    Returns:
      The :class:`MemoryEstimate` of one seed.
    """
    sample = data_lib.to_float(data.train_images[:1])
    model = config.make_model(data.num_classes, preset=preset)
    tx, _ = config.make_tx(
        preset,
        train_lib.abstract_params(model, sample),
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        total_steps=1,
    )
    state = jax.eval_shape(
        lambda: train_lib.init_state(
            model, tx, [0], sample, sign_init=preset.sign_init
        )
    )
    state_bytes = _tree_bytes(state)
    params_bytes = _tree_bytes(state.params)
    if activations is None:
        activations = run_activations(config, preset, data)
    train_activations, eval_activations = activations
    image_bytes = math.prod(data.train_images.shape[1:])
    return MemoryEstimate(
        train_step=2 * state_bytes
        + 2 * train_activations
        + 4 * config.batch_size * image_bytes,
        evaluation=state_bytes + eval_activations,
        other=params_bytes // 2
        + 8 * len(data.train_labels)
        + 3 * config.batch_size * image_bytes,
    )
