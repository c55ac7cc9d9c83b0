"""Training throughput of the BNN MLP: float, binary weights, binary all.

Times bnnjax's own jitted training step (:func:`bnnjax.train.make_train_step`,
the step ``bnnjax train`` runs: forward with batch norm in training mode,
softmax cross-entropy, gradient, optimizer update, ``uint8`` images scaled
inside the step) on :class:`bnnjax.models.linen.BinaryMLP`
(784-1024-1024-1024-10 by default, batch norm after every layer, no biases)
with Adam on every parameter, for:

* ``float``: the ``float`` preset (the same model class with real kernels
  and ReLU), what ``bnnjax train --method float`` runs;
* ``float_flax``: the same network written with ``flax.linen.Dense`` (a
  check that the float preset carries no overhead);
* ``binary_weights``: binary kernels (``Binarizer(surrogate=S,
  scale=--scale, axis=-1)``), real ReLU activations, for every surrogate
  ``S``;
* ``binary_all``: binary kernels and ``sign`` activations with the same
  surrogate (``Binarizer(surrogate=S, scale=None)``), BinaryNet style;
* ``--presets``: the full training step of named methods (their own
  kernel rule and optimizer, e.g. ``scale_adaptive`` for the founding
  method), with binary weights and real activations.

Variants are interleaved: each of ``--rounds`` rounds runs
``steps / rounds`` steps of every variant, in a rotated order, so
background load affects all of them alike. Each step is timed on its own
(``block_until_ready`` on the step's metrics); ``step_ms_median`` is the
median over all timed steps after a warm-up (compilation plus 5 steps),
``examples_per_second = batch_size / step_ms_median``, and
``ratio_to_float`` is the ratio of medians to the ``float`` variant of the
same run. ``cpu_ms_median`` / ``cpu_ratio_to_float`` are the same in
process CPU time (all threads), which other processes on a shared machine
disturb much less than wall time. Batches are real MNIST digits (the
embedded sample), already on the device, cycling through 8 batches.

On a shared machine, pin the run to one core (``taskset -c 1 python
...``): XLA then uses one thread, the peers get ``--threads 1`` (the
default follows the CPU affinity), and wall time equals CPU time; with
two busy cores OpenMP-based PyTorch slows down tenfold (its threads spin
while waiting), which would flatter bnnjax.

``--loop`` also measures the training loop with its input pipeline (as in
``bnnjax.train.run``: :func:`bnnjax.data.iterate_batches` shuffles the
host arrays, :func:`bnnjax.data.prefetch_to_device` keeps two batches in
flight, metrics are read one step late) against the same step fed by
device-resident batches with no per-step synchronisation; both are whole
epochs over the 6,000 training digits, alternated.

``--peers larq,torch`` runs the same network, batch and optimizer in Larq
and in plain PyTorch (``benchmarks/peers/``, with ``--peer-python``, a
separate environment) as subprocesses alternating with bnnjax rounds, and
compares them with bnnjax's matching rule (clipped STE, no scale: BinaryNet
and Larq's ``ste_sign``) and with bnnjax's float step.

``--f32-products`` adds every binary-activation variant with float32
sign products (``sign_product_dtype=None``) beside the layers' default
``"auto"`` (exact bfloat16 sign products where measured faster;
``auto_bfloat16_products`` in the JSON says whether it applies here).

Every line is JSON with the device, versions, thread settings and
``os.getloadavg()``; ratios are only meaningful within one run.

Usage:
  python benchmarks/train_throughput.py --hidden 1024,1024,1024 \\
      --batch-size 100 --steps 300 [--rounds 3] [--surrogates ...] \\
      [--presets scaled_sigmoid,bnn] [--loop] [--peers larq,torch] \\
      [--peer-python /work/peers-venv/bin/python] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import _env
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bnnjax
from bnnjax import data as data_lib
from bnnjax import train as train_lib
from bnnjax.models import linen as models

SURROGATES = bnnjax.DETERMINISTIC_SURROGATE_NAMES
PEERS = ("larq", "torch")
_WARMUP_STEPS = 5
_DEVICE_BATCHES = 8
_PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")


def environment() -> dict[str, Any]:
    """Device, versions and thread settings of this process."""
    return {
        "framework": "bnnjax",
        **_env.environment(),
        # What the layers' default sign_product_dtype="auto" picks for the
        # hidden layers of the benchmark's batch (100 rows, 1024 features).
        "auto_bfloat16_products": bnnjax.nn.bfloat16_dense_is_faster(100, 1024),
    }


class FlaxMLP(nn.Module):
    """The float MLP written with flax.linen layers only."""

    hidden: Sequence[int]
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train: bool, progress=None):
        del progress
        x = jnp.reshape(x, (x.shape[0], -1))
        for width in self.hidden:
            x = nn.Dense(width, use_bias=False)(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-4
            )(x)
            x = nn.relu(x)
        x = nn.Dense(self.num_classes, use_bias=False)(x)
        return nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-4
        )(x)


@dataclasses.dataclass
class Variant:
    """One training configuration and its measurements."""

    name: str
    surrogate: str
    info: dict[str, Any]
    model: nn.Module
    tx: optax.GradientTransformation
    sign_init: bool = False
    times_ms: list[float] = dataclasses.field(default_factory=list)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)
    compile_s: float = 0.0
    state: Any = None
    step: Callable[..., Any] | None = None


def _adam_everywhere(model, sample, lr=1e-3):
    params = train_lib.abstract_params(model, sample)
    try:
        return bnnjax.binary_partition(optax.adam(lr), optax.adam(lr), params)
    except ValueError:  # no binary parameter: the float model
        return optax.adam(lr)


def build_variants(args, sample) -> list[Variant]:
    """The variants named by the command line, not yet compiled."""
    hidden = tuple(args.hidden)
    out: list[Variant] = []

    def add(name, surrogate, model, tx=None, sign_init=False, **info):
        tx = tx if tx is not None else _adam_everywhere(model, sample)
        for impl in args.step_impl:
            out.append(
                Variant(
                    name,
                    surrogate,
                    {"step": impl, **info},
                    model,
                    tx,
                    sign_init,
                )
            )

    float_preset = bnnjax.presets.get_preset("float")
    if "float" in args.variants:
        add(
            "float",
            "none",
            models.BinaryMLP(
                hidden=hidden,
                binary_activations=False,
                kernel_binarizer=float_preset.kernel_binarizer,
            ),
            model_code="BinaryMLP + float preset (identity kernels, ReLU)",
        )
        add(
            "float_flax",
            "none",
            FlaxMLP(hidden=hidden),
            tx=optax.adam(1e-3),
            model_code="flax.linen.Dense/BatchNorm/relu",
        )
    for kind in ("binary_weights", "binary_all"):
        if kind not in args.variants:
            continue
        for name in args.surrogates:
            kernel = bnnjax.Binarizer(surrogate=name, scale=args.scale, axis=-1)
            act = bnnjax.Binarizer(surrogate=name, scale=None)
            model = models.BinaryMLP(
                hidden=hidden,
                binary_activations=kind == "binary_all",
                kernel_binarizer=kernel,
                activation_binarizer=act,
            )
            add(kind, name, model, scale=args.scale)
            if kind == "binary_all" and args.f32_products:
                add(
                    kind,
                    name,
                    model.clone(sign_product_dtype=None),
                    scale=args.scale,
                    sign_product_dtype="float32",
                )
    for preset_name in args.presets:
        preset = bnnjax.presets.get_preset(preset_name)
        model = models.BinaryMLP(
            hidden=hidden,
            binary_activations=False,
            kernel_binarizer=preset.kernel_binarizer,
            activation_binarizer=preset.activation_binarizer,
        )
        tx = preset.optimizer(
            train_lib.abstract_params(model, sample),
            make_optimizer=optax.adam,
            learning_rate=preset.learning_rate,
            real_learning_rate=preset.real_learning_rate,
        )
        add(
            "binary_weights",
            preset.kernel_binarizer.surrogate.name,
            model,
            tx=tx,
            sign_init=preset.sign_init,
            method=preset_name,
            scale=_scale_name(preset.kernel_binarizer.scale),
        )
    if args.peers:
        # bnnjax with the peers' rule: sign with the clipped STE, no scale.
        sign = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
        for kind in ("binary_weights", "binary_all"):
            model = models.BinaryMLP(
                hidden=hidden,
                binary_activations=kind == "binary_all",
                kernel_binarizer=sign,
                activation_binarizer=sign,
            )
            add(kind, "clipped_ste", model, scale="none", peer_match=True)
            if kind == "binary_all" and args.f32_products:
                add(
                    kind,
                    "clipped_ste",
                    model.clone(sign_product_dtype=None),
                    scale="none",
                    peer_match=True,
                    sign_product_dtype="float32",
                )
    return out


def _scale_name(scale) -> str:
    return "none" if scale is None else scale.name


def _device_batches(dataset, batch_size: int):
    images = dataset.train_images
    labels = dataset.train_labels.astype(np.int32)
    count = min(_DEVICE_BATCHES, len(images) // batch_size)
    if count == 0:
        raise SystemExit(
            f"--batch-size {batch_size} exceeds the {len(images)} training "
            "images of the embedded MNIST sample."
        )
    batches = []
    for i in range(count):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        batches.append(
            (jax.device_put(images[sl][None]), jax.device_put(labels[sl][None]))
        )
    return batches


def make_plain_step(model, tx):
    """The same step for one seed without ``jax.vmap``.

    What a user writes with flax and optax: the body of
    :func:`bnnjax.train.make_train_step` (``uint8`` images scaled inside,
    batch norm in training mode, mean softmax cross-entropy, ``tx.update``
    with the params), jitted with the state donated, on unstacked arrays
    (the seed axis of the state and batches is indexed away inside the
    step, which XLA turns into free reshapes).
    """

    def one(state, images, labels, progress):
        x = data_lib.to_float(images)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                progress=progress,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), labels
            ).mean()
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels, dtype=jnp.float32)
        new_state = train_lib.TrainState(params, stats, opt_state)
        return new_state, {"loss": loss, "accuracy": accuracy}

    def step(state, images, labels, progress):
        first = jax.tree.map(lambda a: a[0], state)
        new_state, metrics = one(first, images[0], labels[0], progress)
        return jax.tree.map(lambda a: a[None], (new_state, metrics))

    return jax.jit(step, donate_argnums=(0,))


def prepare(variant: Variant, sample, batches) -> None:
    """Initialises, compiles and warms up one variant."""
    variant.state = train_lib.init_state(
        variant.model, variant.tx, [0], sample, sign_init=variant.sign_init
    )
    if variant.info["step"] == "plain":
        variant.step = make_plain_step(variant.model, variant.tx)
    else:
        variant.step = train_lib.make_train_step(variant.model, variant.tx)
    start = time.perf_counter()
    for i in range(_WARMUP_STEPS):
        images, labels = batches[i % len(batches)]
        variant.state, metrics = variant.step(
            variant.state, images, labels, np.float32(0.5)
        )
        jax.block_until_ready(metrics)
        if i == 0:
            variant.compile_s = time.perf_counter() - start


def run_steps(variant: Variant, batches, n: int, offset: int) -> None:
    """Times ``n`` steps of ``variant``, one by one."""
    for i in range(n):
        images, labels = batches[(offset + i) % len(batches)]
        progress = np.float32(0.5)
        cpu = time.process_time()
        start = time.perf_counter()
        variant.state, metrics = variant.step(
            variant.state, images, labels, progress
        )
        jax.block_until_ready(metrics)
        variant.times_ms.append((time.perf_counter() - start) * 1e3)
        variant.cpu_ms.append((time.process_time() - cpu) * 1e3)


def _peer_command(
    args, peer: str, kind: str, steps: int, mode: str
) -> list[str]:
    return [
        args.peer_python,
        os.path.join(_PEER_DIR, f"{peer}_mlp.py"),
        "--variant",
        kind,
        "--hidden",
        ",".join(map(str, args.hidden)),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(steps),
        "--threads",
        str(args.threads),
        *(["--compile"] if mode == "compiled" else []),
    ]


def run_peer(args, peer: str, kind: str, steps: int, mode: str) -> list[dict]:
    """Runs one peer measurement in a subprocess; returns its JSON lines."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["TF_USE_LEGACY_KERAS"] = "1"
    proc = subprocess.run(
        _peer_command(args, peer, kind, steps, mode),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    if proc.returncode != 0 or not lines:
        return [
            {
                "framework": peer,
                "variant": kind,
                "compiled": mode == "compiled",
                "error": (proc.stderr.strip().splitlines() or ["no output"])[
                    -1
                ],
                "returncode": proc.returncode,
            }
        ]
    return lines


def summarize_peers(args, peer_lines, variants, env) -> list[dict]:
    """One line per peer, kind and mode: pooled steps and bnnjax's ratio.

    bnnjax's reference is its float step for ``float`` and the matching
    rule (clipped STE, no scale, real sign products) otherwise;
    ``bnnjax_speedup`` is the peer's median step time over bnnjax's (wall
    clock), ``bnnjax_cpu_speedup`` the same in process CPU time.
    """
    ours = {}
    for v in variants:
        if v.info["step"] != args.step_impl[0]:
            continue
        if v.name == "float":
            ours["float"] = v
        elif v.info.get("peer_match") and "sign_product_dtype" not in v.info:
            ours[v.name] = v
    out = []
    for peer, kind, mode in itertools.product(
        args.peers, ("float", "binary_weights", "binary_all"), args.peer_modes
    ):
        lines = [
            ln
            for ln in peer_lines
            if ln.get("framework") == peer
            and ln.get("variant") == kind
            and ln.get("compiled") == (mode == "compiled")
        ]
        errors = [ln for ln in lines if "error" in ln]
        if errors or not lines:
            out.append({"benchmark": "peer", **(errors or [{}])[0], **env})
            continue
        times = [t for ln in lines for t in ln["step_ms"]]
        cpu = [t for ln in lines for t in ln["cpu_ms"]]
        ms, cpu_ms = _median(times), _median(cpu)
        ref = ours[kind]
        ref_ms, ref_cpu = _median(ref.times_ms), _median(ref.cpu_ms)
        first = {
            k: v
            for k, v in lines[0].items()
            if k not in ("step_ms", "cpu_ms", "round", "step_ms_median")
        }
        out.append(
            {
                "benchmark": "peer",
                **first,
                "examples_per_second": round(args.batch_size * 1e3 / ms, 1),
                "step_ms_median": round(ms, 4),
                "cpu_ms_median": round(cpu_ms, 4),
                "timed_steps": len(times),
                "bnnjax_step_ms_median": round(ref_ms, 4),
                "bnnjax_cpu_ms_median": round(ref_cpu, 4),
                "bnnjax_speedup": round(ms / ref_ms, 4),
                "bnnjax_cpu_speedup": round(cpu_ms / ref_cpu, 4),
                "bnnjax_device": env["device"],
                "bnnjax_versions": env["versions"],
            }
        )
    return out


def measure_loop(variant: Variant, dataset, batch_size: int, epochs: int):
    """Examples/s of the training loop with its input pipeline vs bare."""
    images, labels = dataset.train_images, dataset.train_labels
    labels = labels.astype(np.int32)
    n_batches = data_lib.num_batches(len(labels), batch_size=batch_size)
    device = [
        (
            jax.device_put(images[i * batch_size : (i + 1) * batch_size][None]),
            jax.device_put(labels[i * batch_size : (i + 1) * batch_size][None]),
        )
        for i in range(n_batches)
    ]
    loop_s: list[float] = []
    bare_s: list[float] = []
    p = np.float32(0.5)
    for epoch in range(epochs):
        # Bare: device-resident batches, no per-step synchronisation.
        start = time.perf_counter()
        metrics = None
        for x, y in device:
            variant.state, metrics = variant.step(variant.state, x, y, p)
        jax.block_until_ready(metrics)
        bare_s.append(time.perf_counter() - start)
        # Loop: shuffle on the host, prefetch, read metrics one step late.
        start = time.perf_counter()
        batches = data_lib.prefetch_to_device(
            data_lib.iterate_batches(
                images, labels, batch_size=batch_size, seed=[0], epoch=epoch
            )
        )
        pending = None
        for x, y in batches:
            variant.state, metrics = variant.step(variant.state, x, y, p)
            if pending is not None:
                float(np.asarray(pending["loss"]).mean())
            pending = metrics
        float(np.asarray(pending["loss"]).mean())
        loop_s.append(time.perf_counter() - start)
    examples = n_batches * batch_size
    bare = examples / statistics.median(bare_s)
    loop = examples / statistics.median(loop_s)
    return {
        "benchmark": "train_loop",
        "variant": variant.name,
        "surrogate": variant.surrogate,
        **variant.info,
        "epochs": epochs,
        "steps_per_epoch": n_batches,
        "loop_examples_per_second": round(loop, 1),
        "bare_examples_per_second": round(bare, 1),
        "loop_to_bare": round(loop / bare, 4),
        "loop_epoch_s": [round(s, 4) for s in loop_s],
        "bare_epoch_s": [round(s, 4) for s in bare_s],
    }


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hidden",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1024, 1024, 1024],
        help="hidden widths (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--steps",
        type=int,
        default=300,
        help="timed steps per variant, over all rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        type=lambda s: s.split(","),
        default=["float", "binary_weights", "binary_all"],
        help="float, binary_weights, binary_all (default: all)",
    )
    parser.add_argument(
        "--surrogates",
        type=lambda s: s.split(","),
        default=list(SURROGATES),
        help="surrogates of the binary variants (default: %(default)s)",
    )
    parser.add_argument(
        "--scale",
        default="mean_abs_dev",
        help="kernel scale of the per-surrogate variants (default: "
        "%(default)s, per output channel)",
    )
    parser.add_argument(
        "--presets",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        help="also time these methods' full steps (e.g. scaled_sigmoid,bnn)",
    )
    parser.add_argument(
        "--step-impl",
        type=lambda s: [v for v in s.split(",") if v],
        default=["library"],
        help="library: bnnjax.train.make_train_step (vmapped over one seed, "
        "what bnnjax train runs); plain: the same step without vmap "
        "(default: %(default)s; the first is the peers' reference)",
    )
    parser.add_argument(
        "--f32-products",
        action="store_true",
        help="also time every binary_all variant with float32 sign products "
        "(sign_product_dtype=None), against the layers' default 'auto' "
        "(exact bfloat16 products where measured faster)",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="also measure the training loop with its input pipeline",
    )
    parser.add_argument(
        "--loop-epochs",
        type=int,
        default=4,
        help="epochs of the loop measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--peers",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        help=f"peer frameworks to compare with, from {list(PEERS)}",
    )
    parser.add_argument(
        "--peer-modes",
        type=lambda s: [v for v in s.split(",") if v],
        default=["eager", "compiled"],
        help="how the peers run their step: eager (tf.function / eager "
        "PyTorch) and/or compiled (tf.function(jit_compile=True) / "
        "torch.compile) (default: %(default)s)",
    )
    parser.add_argument(
        "--peer-python",
        default="/work/peers-venv/bin/python",
        help="python of the environment holding the peers (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=_env.cpu_affinity() or os.cpu_count(),
        help="intra-op threads given to the peers (XLA uses every core it "
        "may run on; default: this process's CPU affinity, %(default)s)",
    )
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    for name in args.surrogates:
        if name not in SURROGATES:
            parser.error(f"--surrogates: {name!r} not in {list(SURROGATES)}")
    for name in args.step_impl:
        if name not in ("library", "plain"):
            parser.error(f"--step-impl: {name!r} not in ['library', 'plain']")
    for name in args.peers:
        if name not in PEERS:
            parser.error(f"--peers: {name!r} not in {list(PEERS)}")
    bad = set(args.variants) - {"float", "binary_weights", "binary_all"}
    if bad or "float" not in args.variants:
        parser.error(
            "--variants must include float (the reference) and only "
            f"float, binary_weights, binary_all; got {args.variants}"
        )

    env = environment()
    out_file = open(args.out, "a") if args.out else None  # noqa: SIM115

    def emit(line: dict) -> None:
        text = json.dumps(line)
        print(text, flush=True)
        if out_file is not None:
            out_file.write(text + "\n")
            out_file.flush()

    dataset = data_lib.load_dataset("mnist-sample")
    sample = data_lib.to_float(dataset.train_images[:1])
    batches = _device_batches(dataset, args.batch_size)
    variants = build_variants(args, sample)
    for v in variants:
        prepare(v, sample, batches)

    per_round = max(1, args.steps // args.rounds)
    peer_steps = max(1, per_round)
    peer_lines: list[dict] = []
    peer_kinds = ("float", "binary_weights", "binary_all")
    load_start = _env.load()
    for r in range(args.rounds):
        shift = r % len(variants)
        for i, v in enumerate(variants[shift:] + variants[:shift]):
            run_steps(v, batches, per_round, offset=r * per_round + i)
        for peer, kind, mode in itertools.product(
            args.peers, peer_kinds, args.peer_modes
        ):
            for line in run_peer(args, peer, kind, peer_steps, mode):
                line["round"] = r
                peer_lines.append(line)
    load_end = _env.load()

    floats = {v.info["step"]: v for v in variants if v.name == "float"}
    for v in variants:
        ms = _median(v.times_ms)
        float_ms = _median(floats[v.info["step"]].times_ms)
        float_cpu_ms = _median(floats[v.info["step"]].cpu_ms)
        emit(
            {
                "benchmark": "train_step",
                "variant": v.name,
                "surrogate": v.surrogate,
                **v.info,
                "hidden": args.hidden,
                "batch_size": args.batch_size,
                "examples_per_second": round(args.batch_size * 1e3 / ms, 1),
                "step_ms_median": round(ms, 4),
                "step_ms_p10": round(float(np.percentile(v.times_ms, 10)), 4),
                "step_ms_p90": round(float(np.percentile(v.times_ms, 90)), 4),
                "ratio_to_float": round(ms / float_ms, 4),
                "float_step_ms_median": round(float_ms, 4),
                "cpu_ms_median": round(_median(v.cpu_ms), 4),
                "cpu_ratio_to_float": round(
                    _median(v.cpu_ms) / float_cpu_ms, 4
                ),
                "timed_steps": len(v.times_ms),
                "rounds": args.rounds,
                "compile_and_first_step_s": round(v.compile_s, 3),
                "loadavg_start": load_start,
                "loadavg_end": load_end,
                **env,
            }
        )
    for line in summarize_peers(args, peer_lines, variants, env):
        emit({**line, "loadavg_start": load_start, "loadavg_end": load_end})
    if args.loop:
        for v in variants:
            if v.info["step"] != "library":
                continue
            if (v.name == "float") or (
                v.name == "binary_weights"
                and v.surrogate == "scaled_sigmoid"
                and "method" not in v.info
            ):
                emit(
                    {
                        **measure_loop(
                            v, dataset, args.batch_size, args.loop_epochs
                        ),
                        "loadavg": _env.load(),
                        **env,
                    }
                )
    if out_file is not None:
        out_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
