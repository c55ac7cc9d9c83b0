"""Binary CNN training speed: bnnjax against Larq and PyTorch, in one run.

Two networks on MNIST-shaped inputs (28x28x1 ``uint8`` images scaled to
``[0, 1]`` inside the step; Adam, lr 1e-3; softmax cross-entropy; no
biases; batch norm momentum 0.9, epsilon 1e-4):

* ``larq_tutorial``: Larq's MNIST guide network (three binary 3x3 convs
  with 32, 64, 64 filters, ``'VALID'``, 2x2 max pools after the first two,
  binary dense 64 and 10; ``scale=False`` batch norm; latent weights
  clipped to ``[-1, 1]``), batch 64;
* ``binarynet_quarter``: BinaryNet's CNN at a quarter of its width
  (``bnnjax.models.linen.BinaryNetCNN(width_multiplier=0.25)``: six
  ``'SAME'`` 3x3 convs 32-32-64-64-128-128, pools after every second,
  dense 256-256-10), batch 100.

Both binarize every kernel and every layer's inputs but the first with
``sign`` and the clipped straight-through gradient, no scale (the peers'
rule). bnnjax variants, each timed in the same process:

* ``bnnjax``: the library's defaults (``conv_impl="auto"``, the reshape
  max pool of :func:`bnnjax.nn.functional.max_pool`);
* ``bnnjax_xla``: the same model with XLA's formulations
  (``conv_impl="xla"``, ``flax.linen.max_pool``), what the layers ran
  before the formulation dispatch;
* ``bnnjax_bf16``: the defaults with exact bfloat16 sign products in
  every convolution whose inputs are binarized
  (``sign_product_dtype=jnp.bfloat16``; ``"auto"`` keeps float32 there);
* ``bnnjax_xla_conv``: XLA's convolution (``conv_impl="xla"``) with the
  reshape max pool, to separate the two formulations' shares;
* ``bnnjax_f32``: the defaults with float32 operands in every
  convolution (``sign_product_dtype=None``; ``"auto"`` multiplies the
  patches of +-1 operands as int8);
* ``bnnjax_autodiff_bwd``: the patches product with float32 operands,
  differentiated by autodiff instead of
  :func:`bnnjax.nn._formulation.conv_patches`'s written-out backward
  (the form before both, to measure what they save);
* ``bnnjax_founding``: the library's defaults with the founding rule
  (scaled-sigmoid surrogate, mean-absolute-deviation scale);
* ``flax_float``: the float network in plain flax (``nn.Conv``,
  ``nn.max_pool``, ReLU).

``--peers larq,torch`` runs ``benchmarks/peers/{larq,torch}_cnn.py`` with
``--peer-python`` between bnnjax's rounds (Larq as a ``tf.function``,
eager graph and ``jit_compile=True``; PyTorch eager and
``torch.compile``). Every step is timed alone; medians pool all rounds.
Each line carries ``examples_per_second`` and, for bnnjax's lines,
``vs_fastest_peer``: its images per second over the fastest binary
peer's (above 1 is faster). ``--profile-steps N`` then traces N steps of
each bnnjax variant with ``jax.profiler`` and prints a
``conv_train_profile`` line: the time per step of each compiled
operation (the top ``--profile-top``, with its shape and jax op name) and
per operation kind.

Usage:
  python benchmarks/conv_train_throughput.py [--network larq_tutorial]
      [--steps 100] [--rounds 3] [--peers larq,torch]
      [--peer-python /work/peers-venv/bin/python] [--out FILE]
      [--profile-steps 5] [--profile-top 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import _env
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bnnjax
from bnnjax.nn import _formulation
from bnnjax.nn import functional as F
from bnnjax.nn import linen as bnn

_PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
NETWORKS = ("larq_tutorial", "binarynet_quarter")
BATCH = {"larq_tutorial": 64, "binarynet_quarter": 100}
STE = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
FOUNDING = bnnjax.Binarizer(axis=-1)
FOUNDING_ACT = bnnjax.Binarizer(scale=None)


def _norm(train: bool, use_scale: bool = True) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-4,
        use_scale=use_scale,
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """A CNN: 3x3 convs (pool after some), then dense layers."""

    convs: tuple[int, ...]
    pool_after: tuple[int, ...]
    padding: str
    dense: tuple[int, ...]
    bn_scale: bool  # False: Larq's tutorial BN(scale=False) when binary


LAYOUTS = {
    "larq_tutorial": Layout((32, 64, 64), (0, 1), "VALID", (64, 10), False),
    "binarynet_quarter": Layout(
        (32, 32, 64, 64, 128, 128), (1, 3, 5), "SAME", (256, 256, 10), True
    ),
}


class CNN(nn.Module):
    """A :class:`Layout` from bnnjax's layers, or flax's when float.

    Binary: ``BinaryConv``/``BinaryDense`` (every layer's inputs binarized
    but the first conv's) -> [pool] -> BN. Float: ``nn.Conv``/``nn.Dense``
    -> [``nn.max_pool``] -> BN -> ReLU (no ReLU after the last).
    """

    layout: Layout
    kernel_binarizer: bnnjax.Binarizer | None = STE
    activation_binarizer: bnnjax.Binarizer | None = STE
    conv_impl: str = "auto"
    xla_pool: bool = False
    conv_product_dtype: Any = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, progress=None):
        binary = self.kernel_binarizer is not None
        lay = self.layout
        pool = nn.max_pool if self.xla_pool or not binary else F.max_pool
        scale = lay.bn_scale or not binary
        for i, features in enumerate(lay.convs):
            if binary:
                x = bnn.BinaryConv(
                    features,
                    (3, 3),
                    padding=lay.padding,
                    use_bias=False,
                    kernel_binarizer=self.kernel_binarizer,
                    input_binarizer=self.activation_binarizer if i else None,
                    conv_impl=self.conv_impl,
                    sign_product_dtype=(
                        self.conv_product_dtype if i else "auto"
                    ),
                )(x, progress=progress)
            else:
                x = nn.Conv(
                    features, (3, 3), padding=lay.padding, use_bias=False
                )(x)
            if i in lay.pool_after:
                x = pool(x, (2, 2), strides=(2, 2))
            x = _norm(train, use_scale=scale)(x)
            if not binary:
                x = nn.relu(x)
        x = jnp.reshape(x, (x.shape[0], -1))
        for i, features in enumerate(lay.dense):
            if binary:
                x = bnn.BinaryDense(
                    features,
                    use_bias=False,
                    kernel_binarizer=self.kernel_binarizer,
                    input_binarizer=self.activation_binarizer,
                )(x, progress=progress)
            else:
                x = nn.Dense(features, use_bias=False)(x)
            x = _norm(train, use_scale=scale)(x)
            if not binary and i < len(lay.dense) - 1:
                x = nn.relu(x)
        return x


def _autodiff_conv_patches(
    x, kernel, strides, kernel_dilation, *, precision=None,
    preferred_element_type=None, int8_operands=False,
):  # fmt: skip
    """The patches product, differentiated by autodiff (bnnjax_autodiff_bwd):
    float32 operands, as before the written backward (``int8_operands`` is
    ignored)."""
    del int8_operands
    patches = _formulation._patches(
        x, tuple(kernel.shape[:-2]), tuple(strides), tuple(kernel_dilation)
    )
    return jnp.dot(
        patches,
        jnp.reshape(kernel, (-1, kernel.shape[-1])),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def build(network: str) -> dict[str, nn.Module]:
    """The variants of ``network``: name -> flax module."""
    lay = LAYOUTS[network]
    return {
        "bnnjax": CNN(lay),
        "bnnjax_xla": CNN(lay, conv_impl="xla", xla_pool=True),
        "bnnjax_bf16": CNN(lay, conv_product_dtype=jnp.bfloat16),
        "bnnjax_xla_conv": CNN(lay, conv_impl="xla"),
        "bnnjax_autodiff_bwd": CNN(lay),
        "bnnjax_f32": CNN(lay, conv_product_dtype=None),
        "bnnjax_founding": CNN(
            lay, kernel_binarizer=FOUNDING, activation_binarizer=FOUNDING_ACT
        ),
        "flax_float": CNN(
            lay, kernel_binarizer=None, activation_binarizer=None
        ),
    }


def make_tx(network: str, params: Any) -> optax.GradientTransformation:
    """Adam everywhere; Larq's tutorial also clips latent weights."""
    if not any(
        label == "binary"
        for label in jax.tree.leaves(bnnjax.binary_param_labels(params))
    ):
        return optax.adam(1e-3)
    binary = optax.adam(1e-3)
    if network == "larq_tutorial":
        binary = optax.chain(binary, bnnjax.clip_latent_weights(bound=1.0))
    return bnnjax.binary_partition(binary, optax.adam(1e-3), params)


@dataclasses.dataclass
class Variant:
    """One bnnjax configuration: its jitted step, state and timings."""

    name: str
    step: Callable[..., Any]
    state: Any
    compile_s: float
    times_ms: list[float] = dataclasses.field(default_factory=list)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)


def make_variant(
    name: str, network: str, model: nn.Module, batch: tuple
) -> Variant:
    """Initialises ``model`` and compiles its training step on ``batch``."""
    images, _ = batch
    x = images.astype(jnp.float32) / 255.0
    variables = model.init(jax.random.key(0), x, train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = make_tx(network, params)

    def step(state, images, labels):
        params, stats, opt_state = state

        def loss_fn(params):
            x = images.astype(jnp.float32) / 255.0
            logits, updates = model.apply(
                {"params": params, "batch_stats": stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()
            return loss, updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    jitted = jax.jit(step, donate_argnums=0)
    state = (params, stats, tx.init(params))
    start = time.perf_counter()
    if name == "bnnjax_autodiff_bwd":  # traced with the autodiff form
        with mock.patch.object(
            _formulation, "conv_patches", _autodiff_conv_patches
        ):
            compiled = jitted.lower(state, *batch).compile()
    else:
        compiled = jitted.lower(state, *batch).compile()
    return Variant(name, compiled, state, time.perf_counter() - start)


def time_steps(variant: Variant, batches: Sequence[tuple], steps: int) -> None:
    """Runs ``steps`` steps, timing each alone (wall and process CPU)."""
    for i in range(steps):
        images, labels = batches[i % len(batches)]
        cpu = time.process_time()
        start = time.perf_counter()
        variant.state, loss = variant.step(variant.state, images, labels)
        float(loss)
        variant.times_ms.append((time.perf_counter() - start) * 1e3)
        variant.cpu_ms.append((time.process_time() - cpu) * 1e3)


def _hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (result shape, jax op name) of a module."""
    found = {}
    for line in hlo_text.splitlines():
        match = _HLO_LINE.match(line)
        if match:
            op = _HLO_OP_NAME.search(line)
            found[match.group(1)] = (match.group(2), op.group(1) if op else "")
    return found


_HLO_LINE = re.compile(r"\s+(?:ROOT )?%([\w.\-]+) = (\([^)]*\)|\S+) ")
_HLO_OP_NAME = re.compile(r'op_name="([^"]+)"')


def profile_ops(
    variant: Variant, batches: Sequence[tuple], steps: int, top: int
) -> dict[str, Any]:
    """Per-operation times of ``steps`` steps, from a profiler trace.

    Traces the steps with ``jax.profiler`` (a Perfetto trace) and sums the
    duration of every event named after an instruction of the compiled
    step, per instruction and per kind (the instruction name without its
    number: ``concatenate``, ``pad_slice_fusion``, ...). ``ops_ms`` can
    fall short of the wall time where operations overlap or the runtime
    waits between them.
    """
    instructions = _hlo_instructions(variant.step.as_text())
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            time_steps(variant, batches, steps)
            wall = time.perf_counter() - start
        (path,) = glob.glob(
            os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
            recursive=True,
        )
        with gzip.open(path, "rt") as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op: dict[str, float] = {}
    for event in events:
        name = event.get("name")
        if event.get("ph") == "X" and name in instructions:
            per_op[name] = per_op.get(name, 0.0) + event.get("dur", 0) / 1e3
    per_kind: dict[str, float] = {}
    for name, ms in per_op.items():
        kind = re.sub(r"\.\d+$", "", name)
        per_kind[kind] = per_kind.get(kind, 0.0) + ms
    ranked = sorted(per_op.items(), key=lambda item: -item[1])
    return {
        "profiled_steps": steps,
        "wall_ms_per_step": round(wall * 1e3 / steps, 3),
        "ops_ms_per_step": round(sum(per_op.values()) / steps, 3),
        "by_kind_ms_per_step": {
            k: round(v / steps, 3)
            for k, v in sorted(per_kind.items(), key=lambda item: -item[1])
            if v / steps >= 0.01
        },
        "top_ops": [
            {
                "name": name,
                "shape": instructions[name][0],
                "op_name": instructions[name][1],
                "ms_per_step": round(ms / steps, 3),
            }
            for name, ms in ranked[:top]
        ],
    }


def run_peer(args, peer: str, variant: str, compiled: bool) -> dict:
    """One peer measurement in a subprocess; its JSON line (or an error)."""
    command = [
        args.peer_python,
        os.path.join(_PEER_DIR, f"{peer}_cnn.py"),
        "--network",
        args.network,
        "--variant",
        variant,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        *(["--compile"] if compiled else []),
    ]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    failed = {"framework": peer, "variant": variant, "compiled": compiled}
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, check=False
        )
    except OSError as e:  # no such interpreter
        return {**failed, "error": str(e), "returncode": None}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {
        **failed,
        "error": (proc.stderr.strip().splitlines() or ["no output"])[-1],
        "returncode": proc.returncode,
    }


def _summary(times_ms: Sequence[float], batch_size: int) -> dict[str, Any]:
    ms = statistics.median(times_ms)
    return {
        "steps": len(times_ms),
        "step_ms_median": round(ms, 3),
        "examples_per_second": round(batch_size * 1e3 / ms, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=NETWORKS, default=NETWORKS[0])
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="bnnjax,bnnjax_xla,bnnjax_founding,flax_float",
        help="comma-separated bnnjax variants",
    )
    parser.add_argument("--peers", default="", help="e.g. larq,torch")
    parser.add_argument(
        "--peer-modes", default="graph,compiled", help="graph and/or compiled"
    )
    parser.add_argument("--peer-python", default="/work/peers-venv/bin/python")
    parser.add_argument("--threads", type=int, default=_env.cpu_affinity() or 1)
    parser.add_argument("--out", help="also append the lines to this file")
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="after the timed rounds, trace this many steps of each bnnjax "
        "variant and print its per-operation times (0: no profile)",
    )
    parser.add_argument(
        "--profile-top", type=int, default=20, help="operations listed"
    )
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or BATCH[args.network]
    env = _env.environment()
    rng = np.random.default_rng(0)
    batches = [
        (
            jnp.asarray(
                rng.integers(0, 256, (args.batch_size, 28, 28, 1), np.uint8)
            ),
            jnp.asarray(rng.integers(0, 10, (args.batch_size,), np.int32)),
        )
        for _ in range(8)
    ]
    modules = build(args.network)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(modules))
    if unknown:
        parser.error(f"unknown --variants {unknown}; known: {sorted(modules)}")
    variants = [
        make_variant(n, args.network, modules[n], batches[0]) for n in names
    ]
    for v in variants:
        time_steps(v, batches, args.warmup)
        v.times_ms.clear()
        v.cpu_ms.clear()
    peers = [p for p in args.peers.split(",") if p]
    modes = [m for m in args.peer_modes.split(",") if m]
    peer_lines: list[dict] = []
    for _ in range(args.rounds):
        for v in variants:
            time_steps(v, batches, args.steps)
        for peer in peers:
            for mode in modes:
                for kind in ("binary_all", "float"):
                    peer_lines.append(
                        run_peer(args, peer, kind, mode == "compiled")
                    )
    out = []
    pooled: dict[tuple, list[float]] = {}
    for line in peer_lines:
        if "error" in line:
            out.append({"benchmark": "conv_train_peer", **line, **env})
            continue
        key = (line["framework"], line["variant"], line["compiled"])
        pooled.setdefault(key, []).extend(line["step_ms"])
    peer_summaries = {
        key: _summary(times, args.batch_size) for key, times in pooled.items()
    }
    binary_peers = [
        s["examples_per_second"]
        for (_, kind, _), s in peer_summaries.items()
        if kind == "binary_all"
    ]
    fastest = max(binary_peers) if binary_peers else None
    for (framework, kind, compiled), s in peer_summaries.items():
        out.append(
            {
                "benchmark": "conv_train_peer",
                "network": args.network,
                "framework": framework,
                "variant": kind,
                "compiled": compiled,
                "batch_size": args.batch_size,
                **s,
                "peer_versions": {
                    k: line[k]
                    for line in peer_lines
                    if line.get("framework") == framework
                    for k in ("larq", "tensorflow", "torch")
                    if k in line
                },
                **env,
            }
        )
    for v in variants:
        s = _summary(v.times_ms, args.batch_size)
        out.append(
            {
                "benchmark": "conv_train",
                "network": args.network,
                "framework": "bnnjax" if v.name != "flax_float" else "flax",
                "variant": v.name,
                "batch_size": args.batch_size,
                **s,
                "cpu_ms_median": round(statistics.median(v.cpu_ms), 3),
                "compile_s": round(v.compile_s, 2),
                "vs_fastest_peer": (
                    round(s["examples_per_second"] / fastest, 3)
                    if fastest
                    else None
                ),
                **env,
            }
        )
    for v in variants if args.profile_steps > 0 else ():
        out.append(
            {
                "benchmark": "conv_train_profile",
                "network": args.network,
                "variant": v.name,
                "batch_size": args.batch_size,
                **profile_ops(v, batches, args.profile_steps, args.profile_top),
                **env,
            }
        )
    for line in out:
        _env.emit(line, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
