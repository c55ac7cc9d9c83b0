"""The jit-able training step: state, initialisation, train and eval steps.

Every array in a :class:`TrainState` carries a leading *seed* axis:
several seeds train at once, in one process, with ``jax.vmap`` (one
model, optimizer state and batch order per seed; training seeds
``[0, 1]`` together gives each seed's result alone).

The loss is softmax cross-entropy on the model's logits. Training
progress ``step / total_steps`` is passed to the model at every step as
a traced scalar (annealed surrogates such as IR-Net's EDE use it), so the
step compiles once. A training step built with an augmentation
(``bnnjax.training.augment``) augments its batch on the device with a
key of the seed and the step index; evaluation never augments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from bnnjax import data as data_lib
from bnnjax import distributed
from bnnjax.nn.functional import LATENT_KERNEL
from bnnjax.training import augment as augment_lib
from bnnjax.training import losses as losses_lib
from bnnjax.training.config import TrainConfig

__all__ = [
    "Evaluation",
    "Teacher",
    "TrainState",
    "abstract_params",
    "build_model",
    "build_training",
    "evaluate",
    "evaluate_counts",
    "init_state",
    "make_eval_step",
    "make_train_step",
]


class Teacher(NamedTuple):
    """A network the training step distils from (see :func:`make_train_step`).

    Attributes:
      model: the teacher's linen model, applied in evaluation mode.
      variables: its ``{"params", "batch_stats"}`` with a leading seed axis
        (one teacher per student seed; the same one repeated is allowed).
      weight: ``w`` of ``(1 - w) * label loss + w * distillation``.
      temperature: ``T`` of :func:`bnnjax.train.distillation`.
    """

    model: nn.Module
    variables: Any
    weight: float = 1.0
    temperature: float = 1.0


class TrainState(NamedTuple):
    """Training state; every leaf has a leading seed axis.

    Attributes:
      params: the ``"params"`` collection (latent kernels and real
        parameters).
      batch_stats: the ``"batch_stats"`` collection (batch-norm running
        averages).
      opt_state: the optax state.
    """

    params: Any
    batch_stats: Any
    opt_state: Any


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The linen model of ``config``; see :meth:`TrainConfig.make_model`."""
    return config.make_model(num_classes)


def _sign_kernels(params: Any) -> Any:
    def sign(path: jax.tree_util.KeyPath[Any], leaf: jax.Array) -> jax.Array:
        last = path[-1] if path else None
        if getattr(last, "key", None) == LATENT_KERNEL:
            return jnp.where(leaf >= 0, 1, -1).astype(leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(sign, params)


def _seed_keys(seeds: Sequence[int]) -> jax.Array:
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def abstract_params(model: nn.Module, sample: jax.Array) -> Any:
    """Shapes and dtypes of one model's ``"params"`` (no computation)."""
    variables = jax.eval_shape(
        lambda k: model.init(k, sample, train=False, progress=jnp.float32(0)),
        jax.random.key(0),
    )
    return variables["params"]


def init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seeds: Sequence[int],
    sample: jax.typing.ArrayLike,
    *,
    sign_init: bool = False,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialises one model and optimizer state per seed, stacked.

    Seed ``s`` initialises with ``jax.random.key(s)``, so a seed gets the
    same initial parameters alone or with others.

    Args:
      model: a linen model called as ``apply(v, x, train=..., progress=...)``.
      tx: the optimizer.
      seeds: the seeds (the leading axis of every leaf, in this order).
      sample: a float input batch of the right shape (values unused).
      sign_init: replace every latent kernel by its sign (``±1``; Bop).
      mesh: a device mesh (:func:`bnnjax.distributed.data_mesh`): the
        state is replicated on every device of it (in a multi-process job,
        every process must call this). ``None``: the default device.

    Returns:
      A :class:`TrainState` whose leaves have a leading ``len(seeds)`` axis.
    """
    sample = jnp.asarray(sample)

    def one(key: jax.Array) -> TrainState:
        variables = model.init(
            key, sample, train=False, progress=jnp.float32(0)
        )
        params = variables["params"]
        if sign_init:
            params = _sign_kernels(params)
        return TrainState(
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
        )

    keys = _seed_keys(seeds)
    if mesh is None:
        return jax.jit(jax.vmap(one))(keys)
    rep = distributed.replicated(mesh)
    return jax.jit(jax.vmap(one), in_shardings=rep, out_shardings=rep)(keys)


def _over_seeds(
    fn: Callable[..., Any], in_axes: tuple[int | None, ...]
) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)``, without the vmap when there is one seed.

    The seed axis is read from the first argument's leaves (static under
    ``jit``). With a single seed the step runs unbatched on the squeezed
    arguments and the axis is put back on the results: XLA on CPU runs
    unbatched matrix products faster than batched ones of batch 1
    (``benchmarks/train_throughput.py`` compares the two).
    """
    batched = jax.vmap(fn, in_axes=in_axes)

    def mapped(*args: Any) -> Any:
        sizes = {x.shape[0] for x in jax.tree_util.tree_leaves(args[0])}
        if sizes != {1}:
            return batched(*args)
        squeezed = [
            a if axis is None else jax.tree.map(lambda x: x[0], a)
            for a, axis in zip(args, in_axes, strict=True)
        ]
        out = fn(*squeezed)
        return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)

    return mapped


def _donate_state() -> bool:
    """Whether the train step donates its input state to its output.

    On accelerators donation updates parameters and optimizer state in
    place instead of holding two copies in device memory. On CPU, XLA
    copies every donated buffer before updating it, which slows the step
    (``benchmarks/README.md``), and memory is rarely the limit, so the CPU
    step does not donate.
    """
    return jax.default_backend() != "cpu"


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    augment: augment_lib.Augmentation | None = None,
    seeds: Sequence[int] | None = None,
    loss: losses_lib.Loss = losses_lib.cross_entropy,
    teacher: Teacher | None = None,
    dropout: bool = False,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted training step, vmapped over the seed axis.

    ``step(state, images, labels, progress) -> (state, metrics)``, or with
    ``augment``, ``step(state, images, labels, progress, index)``:

    * ``state``: a :class:`TrainState` with a leading seed axis (donated
      on accelerators, not on CPU where donating was slower);
    * ``images``: ``(S, B, H, W, C)`` uint8 batches, one per seed (as
      :func:`bnnjax.data.iterate_batches` stacks them), scaled to ``[0, 1]``
      inside the step;
    * ``labels``: ``(S, B)`` int32;
    * ``progress``: float32 scalar ``step / total_steps``, shared by every
      seed and passed to the model (traced: a new value does not
      recompile);
    * ``index`` (with ``augment`` only): the int32 0-based index of this
      step in the run (traced). Seed ``s``'s batch is replaced by
      ``augment(augment_key(s, index), images)`` before it is scaled
      (``bnnjax.training.augment.augment_key``): the draws depend on
      the seed and the index only, so a resumed run augments as an
      uninterrupted one, and seeds differ;
    * ``metrics``: ``{"loss", "accuracy", "correct"}``, each of shape
      ``(S,)``: the batch's mean loss, its accuracy (float32) and its
      number of correctly classified examples (int32, exact).

    With one seed (``S == 1``) the step runs without the vmap on the
    squeezed arguments (faster on CPU) and has the same signature.

    The loss is the batch's mean of ``loss`` (softmax cross-entropy by
    default); batch norm uses batch statistics and updates its running
    averages.

    With a ``mesh`` the step is data-parallel: the batch axis ``B`` of
    ``images`` and ``labels`` is split over the mesh's devices (the seed
    axis is not), the state and metrics are replicated, and XLA adds the
    all-reduces. Every mean over the batch (the loss, batch-norm
    statistics) is over the global batch, so the step computes what it
    computes on one device, up to the order of floating-point sums.
    ``B`` must be a multiple of the number of devices.

    Args:
      model: the linen model.
      tx: the optimizer (its updates get the current params).
      mesh: a device mesh (:func:`bnnjax.distributed.data_mesh`), or
        ``None`` for the default device.
      augment: ``f(key, images) -> images`` applied to each seed's
        ``(B, H, W, C)`` batch (e.g.
        ``bnnjax.training.augment.crop_flip``), or ``None``.
      seeds: the seeds of the state's seed axis, in order; required with
        ``augment`` or ``dropout`` (they key the draws), unused without.
      loss: ``loss(logits, labels) -> (B,)`` per-example losses (see
        ``bnnjax.training.losses``).
      dropout: the model has dropout layers: seed ``s`` at step ``i``
        drops with the key ``dropout_key(s, i)``
        (``bnnjax.training.augment``), so the step takes ``index`` as with
        ``augment`` (and needs ``seeds``).
      teacher: distil from this network: its logits on the step's
        (augmented) batch, in evaluation mode and without gradient, give
        the per-example loss ``(1 - w) * loss + w * distillation`` (the
        teacher's forward pass runs inside the step). Its variables are
        an argument of the compiled step, not constants in it. ``None``:
        ``loss`` alone.

    Returns:
      The jitted step (with ``teacher``, a function that calls it with
      the teacher's variables).

    Raises:
      ValueError: for ``augment`` or ``dropout`` without ``seeds``.
    """
    if (augment is not None or dropout) and seeds is None:
        raise ValueError(
            "make_train_step(augment=... or dropout=True) needs seeds=, the "
            "seeds of the state's seed axis: they key the augmentation and "
            "the dropout masks."
        )

    def one(
        state: TrainState,
        images: jax.Array,
        labels: jax.Array,
        progress: jax.Array,
        rngs: dict[str, jax.Array] | None,
        teacher_variables: Any = None,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        x = data_lib.to_float(images)
        teacher_logits = jnp.zeros(())
        if teacher is not None:
            # Nothing is mutable in evaluation mode: apply returns logits.
            teacher_logits = jax.lax.stop_gradient(
                cast(
                    jax.Array,
                    teacher.model.apply(
                        teacher_variables, x, train=False, progress=1.0
                    ),
                )
            )

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                progress=progress,
                mutable=["batch_stats"],
                rngs=rngs,
            )
            per_example = loss(logits, labels)
            if teacher is not None:
                w = teacher.weight
                distilled = losses_lib.distillation(
                    logits, teacher_logits, temperature=teacher.temperature
                )
                per_example = (1 - w) * per_example + w * distilled
            mean_loss = jnp.mean(per_example)
            return mean_loss, (logits, updates["batch_stats"])

        (value, (logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        hits = jnp.argmax(logits, -1) == labels
        accuracy = jnp.mean(hits, dtype=jnp.float32)
        correct = jnp.sum(hits, dtype=jnp.int32)
        new_state = TrainState(params, batch_stats, opt_state)
        return new_state, {
            "loss": value,
            "accuracy": accuracy,
            "correct": correct,
        }

    donate = (0,) if _donate_state() else ()
    rep = batch = None
    if mesh is not None:
        rep = distributed.replicated(mesh)
        batch = distributed.batch_sharding(mesh, 1)
    shardings: tuple[Any, ...] = (rep, batch, batch, rep)
    # The teacher's variables: a last argument, with a seed axis.
    extra = () if teacher is None else (0,)
    if augment is None and not dropout:

        def unkeyed(
            state: TrainState,
            images: jax.Array,
            labels: jax.Array,
            progress: jax.Array,
            *rest: Any,
        ) -> tuple[TrainState, dict[str, jax.Array]]:
            return one(state, images, labels, progress, None, *rest)

        step = _over_seeds(unkeyed, in_axes=(0, 0, 0, None, *extra))
    else:
        step = _keyed(one, augment, dropout, cast(Sequence[int], seeds), extra)
        shardings = (*shardings, rep)
    shardings = (*shardings, *(rep for _ in extra))
    if mesh is None:
        jitted = jax.jit(step, donate_argnums=donate)
    else:
        jitted = jax.jit(
            step,
            in_shardings=shardings,
            out_shardings=(rep, rep),
            donate_argnums=donate,
        )
    if teacher is None:
        return jitted

    def with_teacher(*args: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        return jitted(*args, teacher.variables)

    return with_teacher


def _keyed(
    one: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    augment: augment_lib.Augmentation | None,
    dropout: bool,
    seeds: Sequence[int],
    extra: tuple[int | None, ...] = (),
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """``one`` over the seed axis with keys of (seed, step).

    Each seed's batch is augmented first (with ``augment``), and the model
    gets the dropout key (with ``dropout``). The result takes the step's
    index as a fifth argument (then ``one``'s further arguments, mapped
    with the axes ``extra``); seed ``s``'s keys at step ``i`` are
    ``augment_key(s, i)`` and ``dropout_key(s, i)``.
    """

    def one_keyed(
        state: TrainState,
        images: jax.Array,
        labels: jax.Array,
        progress: jax.Array,
        seed: jax.Array,
        index: jax.Array,
        *rest: Any,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        if augment is not None:
            images = augment(augment_lib.augment_key(seed, index), images)
        rngs = None
        if dropout:
            rngs = {"dropout": augment_lib.dropout_key(seed, index)}
        return one(state, images, labels, progress, rngs, *rest)

    # A host constant (not a device array), so every process of a
    # multi-process job embeds the same values.
    seed_array = np.asarray(seeds, np.uint32)
    over_seeds = _over_seeds(
        one_keyed, in_axes=(0, 0, 0, None, 0, None, *extra)
    )

    def step(
        state: TrainState,
        images: jax.Array,
        labels: jax.Array,
        progress: jax.Array,
        index: jax.Array,
        *rest: Any,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        return over_seeds(
            state, images, labels, progress, seed_array, index, *rest
        )

    return step


def make_eval_step(
    model: nn.Module,
    *,
    mesh: Mesh | None = None,
    loss: losses_lib.Loss = losses_lib.cross_entropy,
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Builds the jitted evaluation step, vmapped over the seed axis.

    ``step(state, images, labels, mask, progress) -> (loss_sum, correct)``
    with one shared ``(B, H, W, C)`` uint8 batch for every seed, ``mask``
    ``(B,)`` marking real (not padding) examples (nonzero: real); both
    results have shape ``(S,)``: the float32 sum of the losses and the
    int32 count of correctly classified real examples (exact, so
    accuracies can be reported as exact fractions). Batch norm uses its
    running averages.

    Args:
      model: the linen model.
      mesh: a device mesh: the batch is split over its devices (``B`` a
        multiple of their number) and the sums are replicated. ``None``:
        the default device.
      loss: ``loss(logits, labels) -> (B,)`` per-example losses (see
        ``bnnjax.training.losses``).

    Returns:
      The jitted step.
    """

    def one(
        state: TrainState,
        images: jax.Array,
        labels: jax.Array,
        mask: jax.Array,
        progress: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        # Nothing is mutable: apply returns the logits alone.
        logits = cast(
            jax.Array,
            model.apply(
                {"params": state.params, "batch_stats": state.batch_stats},
                data_lib.to_float(images),
                train=False,
                progress=progress,
            ),
        )
        losses = loss(logits, labels)
        hits = (jnp.argmax(logits, -1) == labels) & (mask != 0)
        return jnp.sum(losses * mask), jnp.sum(hits, dtype=jnp.int32)

    step = _over_seeds(one, in_axes=(0, None, None, None, None))
    if mesh is None:
        return jax.jit(step)
    rep = distributed.replicated(mesh)
    batch = distributed.batch_sharding(mesh, 0)
    return jax.jit(
        step,
        in_shardings=(rep, batch, batch, batch, rep),
        out_shardings=(rep, rep),
    )


class Evaluation(NamedTuple):
    """The result of :func:`evaluate_counts`: losses and exact counts.

    Attributes:
      loss: ``(S,)`` float mean loss per seed.
      correct: ``(S,)`` int64 count of correctly classified examples per
        seed.
      total: the number of examples in the split (the same for every
        seed).
    """

    loss: np.ndarray
    correct: np.ndarray
    total: int

    @property
    def accuracy(self) -> np.ndarray:
        """``(S,)`` float64 ``correct / total``: the double nearest the
        exact fraction, so 963 of 1000 prints as ``0.963``."""
        return self.correct / self.total


def evaluate_counts(
    eval_step: Callable[..., tuple[jax.Array, jax.Array]],
    state: TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    progress: float = 1.0,
    mesh: Mesh | None = None,
) -> Evaluation:
    """Mean loss and number of correct predictions per seed over a split.

    The counts are summed on the device as int32, so they are exact, and
    :attr:`Evaluation.accuracy` is the exact fraction ``correct / total``
    rounded once, to float64.

    The last batch is padded to ``batch_size`` (and masked), so every call
    uses one compiled shape. With a ``mesh``, the batch is first rounded
    up to a multiple of its device count (padding masked too), and each
    process transfers only the rows its devices hold.

    Args:
      eval_step: from :func:`make_eval_step`.
      state: the stacked state.
      images: ``(N, H, W, C)`` uint8.
      labels: ``(N,)`` int32.
      batch_size: examples per evaluation batch.
      progress: passed to the model (only annealed backward rules read it).
      mesh: the mesh ``eval_step`` was built with, or ``None``.

    Returns:
      An :class:`Evaluation` with ``total = N``.

    Raises:
      ValueError: for an empty split.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("evaluate: the split holds no examples.")
    size = min(batch_size, n)
    sharding = None
    if mesh is not None:
        size = -(-size // mesh.size) * mesh.size
        sharding = distributed.batch_sharding(mesh, 0)
    loss_sum: float | jax.Array = 0.0
    correct: int | jax.Array = 0
    p = np.float32(progress)
    for start in range(0, n, size):
        x: np.ndarray | jax.Array = images[start : start + size]
        y: np.ndarray | jax.Array = labels[start : start + size]
        k = len(y)
        mask: np.ndarray | jax.Array = np.zeros(size, np.float32)
        mask[:k] = 1
        if k < size:
            x = np.concatenate([x, np.zeros((size - k, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(size - k, y.dtype)])
        if sharding is not None:
            rows = distributed.host_rows(sharding, (size,), 0)
            x, y, mask = (
                distributed.global_batch(sharding, a[rows], a.shape)
                for a in (x, y, mask)
            )
        batch_loss, batch_correct = eval_step(state, x, y, mask, p)
        loss_sum = loss_sum + batch_loss
        correct = correct + batch_correct
    return Evaluation(
        loss=np.asarray(loss_sum) / n,
        correct=np.asarray(correct).astype(np.int64),
        total=n,
    )


def evaluate(
    eval_step: Callable[..., tuple[jax.Array, jax.Array]],
    state: TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    progress: float = 1.0,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy per seed over a whole split.

    ``bnnjax.training.step.evaluate_counts`` without the counts: the
    accuracy is float64 ``correct / total``, the exact fraction rounded
    once (963 of 1000 is ``0.963``).

    Args:
      eval_step: from :func:`make_eval_step`.
      state: the stacked state.
      images: ``(N, H, W, C)`` uint8.
      labels: ``(N,)`` int32.
      batch_size: examples per evaluation batch.
      progress: passed to the model (only annealed backward rules read it).
      mesh: the mesh ``eval_step`` was built with, or ``None``.

    Returns:
      ``(loss, accuracy)`` numpy arrays of shape ``(S,)``.

    Raises:
      ValueError: for an empty split.
    """
    result = evaluate_counts(
        eval_step,
        state,
        images,
        labels,
        batch_size=batch_size,
        progress=progress,
        mesh=mesh,
    )
    return result.loss, result.accuracy


def build_training(
    config: TrainConfig,
    sample: jax.Array,
    num_classes: int,
    steps_per_epoch: int,
) -> tuple[nn.Module, optax.GradientTransformation, Any, int]:
    """Model, optimizer, binary learning-rate schedule and total steps.

    Args:
      config: the run.
      sample: a float input batch of the right shape (values unused).
      num_classes: number of outputs.
      steps_per_epoch: training steps in one epoch.

    Returns:
      ``(model, tx, lr_fn, total_steps)``: the linen model, the preset's
      optimizer over its parameters, the binary group's learning rate
      (a schedule or a number) and ``config.epochs * steps_per_epoch``.
    """
    total_steps = config.epochs * steps_per_epoch
    model = build_model(config, num_classes)
    lr, real_lr = config.learning_rates()
    tx, lr_fn = config.make_tx(
        config.preset,
        abstract_params(model, sample),
        learning_rate=lr,
        real_learning_rate=real_lr,
        total_steps=total_steps,
    )
    return model, tx, lr_fn, total_steps
