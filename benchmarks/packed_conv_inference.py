"""Packed 1-bit convolution inference against float32: layers and CNNs.

Single 3x3 convolutions (``'SAME'`` padding with ``pad_value=-1``, so every
value the kernel sees is ``+-1``), by default ``256 -> 256`` channels on a
16x16 map, ``128 -> 128`` on 32x32 and ``512 -> 512`` on 8x8, each timed
against the float32 convolution in the same run, interleaved (every round
times every variant once, so a change in machine load hits them alike;
``speedup = float32_ms / variant_ms`` per round, reported as the median
and range over rounds):

* ``float32``: jitted ``lax.conv_general_dilated`` (NHWC/HWIO) of ``+-1``
  float inputs with the ``+-1`` float kernel, padded with ``pad_value``
  (``lax.pad`` then ``VALID``, as the float model's binary convolution);
* ``xnor_conv``: jitted :func:`bnnjax.packed.xnor_conv` from boolean
  inputs with the kernel laid out once by
  :func:`bnnjax.packed.prepare_xnor_kernel`: what a layer of a packed
  model runs (pad, pack per pixel, im2col on the words, XNOR-popcount);
* ``xnor_packed_input``: the same from inputs already padded and packed
  (:func:`bnnjax.packed.im2col` on the words, then
  :func:`bnnjax.packed.xnor_dense`), to show what packing costs.

Once per case (at its first batch size) the integer outputs of both XNOR
variants are checked to equal the float32 convolution exactly.
``weight_bytes`` is the size of the kernel each call reads.

Then whole fully binary CNNs (:class:`bnnjax.models.linen.BinaryNetCNN`
at ``--width``, sign activations, ``pad_value=-1``: every layer but the
first convolution, which sees the real pixels, is XNOR-popcount in the
packed file) on 28x28x1 and 32x32x3 inputs: random initial weights, batch
statistics set by one train-mode pass over random images (with
``bn_momentum=0`` for that pass, so the running averages are that batch's
statistics), exported with :func:`bnnjax.export.export_model` to a
temporary file and loaded back with :func:`bnnjax.export.load`. Timed:
jitted ``model.apply(variables, x, train=False)`` (the float32 checkpoint)
against :func:`bnnjax.export.predict` on the loaded model (its time
includes ``predict``'s Python overhead), as ``packed_inference.py`` does
for MLPs, with the argmax agreement (checked to be 1.0), the largest logit
difference, the file size and the float32 bytes of the variables.

Every line is JSON with the device, versions, CPU affinity and load
average; ratios are only meaningful within one run. Pin to one core for
stable numbers: ``taskset -c 1 python benchmarks/packed_conv_inference.py``.

Usage:
  python benchmarks/packed_conv_inference.py [--rounds 5] [--calls 20]
      [--batches 1,64] [--width 0.25] [--only {layers,networks}]
      [--limit N] [--cases 256:256:16,...] [--inputs 28x28x1,32x32x3]
      [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import _env
import jax
import packed_inference

#: ``(in channels, out channels, map size)`` of the 3x3 layer cases.
CASES = ((256, 256, 16), (128, 128, 32), (512, 512, 8))
#: ``(height, width, channels)`` of the network inputs.
INPUTS = ((28, 28, 1), (32, 32, 3))
KERNEL = (3, 3)
PAD_VALUE = -1.0
CALIBRATION_BATCH = 64


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--calls", type=int, default=20, help="timed calls per round"
    )
    parser.add_argument("--batches", default="1,64")
    parser.add_argument(
        "--width", type=float, default=0.25, help="BinaryNetCNN multiplier"
    )
    parser.add_argument("--only", choices=("layers", "networks"))
    parser.add_argument(
        "--limit", type=int, help="only the first N layer cases"
    )
    parser.add_argument(
        "--cases",
        default=",".join(":".join(map(str, c)) for c in CASES),
        help="layer cases IN:OUT:SIZE (3x3 kernel, SIZE x SIZE map)",
    )
    parser.add_argument(
        "--inputs",
        default=",".join("x".join(map(str, s)) for s in INPUTS),
        help="network input shapes HxWxC",
    )
    parser.add_argument("--out", help="also append the lines to this file")
    return parser.parse_args(argv)


def _round(v: float) -> float:
    """``v`` to 6 significant digits."""
    return float(f"{v:.6g}")


def _line(out: str | None, **fields: Any) -> dict:
    """Prints ``fields`` as one JSON line (and appends it to ``out``)."""
    for k, v in fields.items():
        if isinstance(v, float):
            fields[k] = _round(v)
    fields["loadavg_1m"] = round(os.getloadavg()[0], 2)
    _env.emit(fields, out)
    return fields


def _speedup_fields(results: dict, name: str) -> dict:
    """``float32_ms``, ``variant_ms`` and the speedup median and range."""
    speedups = results[name][1]
    return {
        "float32_ms": results["float32"][0],
        "variant_ms": results[name][0],
        "speedup": statistics.median(speedups),
        "speedup_min": min(speedups),
        "speedup_max": max(speedups),
    }


# --------------------------------------------------------------------------
# Single layers.


def _float_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """The float model's convolution: pad with ``PAD_VALUE``, ``VALID``."""
    from jax import lax

    pads = [(0, 0, 0), *((k // 2, k // 2, 0) for k in KERNEL), (0, 0, 0)]
    x = lax.pad(x, jax.numpy.asarray(PAD_VALUE, x.dtype), pads)
    return lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _window() -> dict:
    """``xnor_conv``'s window arguments for ``KERNEL``, ``'SAME'``."""
    return {
        "kernel_size": KERNEL,
        "strides": (1, 1),
        "dilation": (1, 1),
        "padding": tuple((k // 2, k // 2) for k in KERNEL),
    }


def _layer_fns(n_in: int) -> dict:
    """The jitted ``float32``, ``xnor_conv`` and ``xnor_packed_input``."""
    from bnnjax import packed

    window = _window()
    n = n_in * KERNEL[0] * KERNEL[1]

    def from_bits(bits, k):
        return packed.xnor_conv(
            bits, k, n_in=n_in, pad_value=PAD_VALUE, **window
        )

    def from_words(words, k):
        no_pad = {**window, "padding": ((0, 0), (0, 0))}
        patches = packed.im2col(words, **no_pad)
        flat = patches.reshape(*patches.shape[:3], -1)
        return packed.xnor_dense(flat, k, n)

    return {
        "float32": jax.jit(_float_conv),
        "xnor_conv": jax.jit(from_bits),
        "xnor_packed_input": jax.jit(from_words),
    }


def _packed_input(bits: jax.Array) -> jax.Array:
    """Booleans padded with ``PAD_VALUE`` and packed per pixel."""
    from bnnjax import packed

    pads = ((0, 0), *((k // 2, k // 2) for k in KERNEL), (0, 0))
    padded = jax.numpy.pad(bits, pads, constant_values=PAD_VALUE > 0)
    return packed.pack_bits(padded)


def _check_exact(case: tuple, variants: dict) -> None:
    """Both XNOR variants' integer outputs equal the float32 conv."""
    import numpy as np

    fn, args = variants["float32"]
    want = np.asarray(fn(*args))
    for name in ("xnor_conv", "xnor_packed_input"):
        fn, args = variants[name]
        got = np.asarray(fn(*args))
        if got.dtype != np.int32 or not np.array_equal(got, want):
            raise AssertionError(f"{name} differs from float32 at {case}")


def _layer_variants(case: tuple, batch: int, fns: dict, kernels: tuple):
    """``name -> (fn, args)`` on one random ``+-1`` batch."""
    import jax.numpy as jnp

    n_in, _, size = case
    w_float, k_xnor = kernels
    key = jax.random.key(batch * 7919 + n_in)
    bits = jax.random.bernoulli(key, 0.5, (batch, size, size, n_in))
    x = jnp.where(bits, 1.0, -1.0).astype(jnp.float32)
    return {
        "float32": (fns["float32"], (x, w_float)),
        "xnor_conv": (fns["xnor_conv"], (bits, k_xnor)),
        "xnor_packed_input": (
            fns["xnor_packed_input"],
            (_packed_input(bits), k_xnor),
        ),
    }


def _case_kernels(case: tuple) -> tuple:
    """``(+-1 float32 HWIO kernel, XnorKernel)`` of the same signs."""
    import jax.numpy as jnp

    from bnnjax import packed

    n_in, n_out, _ = case
    latent = jax.random.normal(jax.random.key(n_out), (*KERNEL, n_in, n_out))
    w_float = jnp.where(latent >= 0, 1.0, -1.0).astype(jnp.float32)
    words = packed.pack_kernel(latent).words
    return w_float, packed.prepare_xnor_kernel(words)


def bench_layers(
    cases: Sequence[tuple[int, int, int]],
    batches: Sequence[int],
    rounds: int,
    calls: int,
    env: dict,
    out: str | None,
) -> None:
    """One line per layer case, batch and packed variant."""
    for case in cases:
        kernels = _case_kernels(case)
        fns = _layer_fns(case[0])
        nbytes = {"float32": kernels[0].nbytes, "xnor": kernels[1].nbytes}
        for i, batch in enumerate(batches):
            variants = _layer_variants(case, batch, fns, kernels)
            if i == 0:
                _check_exact(case, variants)
            results = packed_inference.interleaved(variants, rounds, calls)
            for name in ("xnor_conv", "xnor_packed_input"):
                _line(
                    out,
                    benchmark="packed_conv_layer",
                    in_channels=case[0],
                    out_channels=case[1],
                    map_size=[case[2], case[2]],
                    kernel_size=list(KERNEL),
                    pad_value=PAD_VALUE,
                    batch=batch,
                    variant=name,
                    **_speedup_fields(results, name),
                    exact=True,
                    float32_weight_bytes=int(nbytes["float32"]),
                    weight_bytes=int(nbytes["xnor"]),
                    rounds=rounds,
                    **env,
                )


# --------------------------------------------------------------------------
# Whole networks.


def _cnn(width: float):
    """A fully binary BinaryNetCNN; refuses activations that are not sign."""
    from bnnjax.models import linen as models

    model = models.BinaryNetCNN(width_multiplier=width, pad_value=PAD_VALUE)
    act = model.activation_binarizer
    if act.scale is not None or act.center or act.stochastic:
        raise AssertionError(f"activations are not plain sign: {act}")
    return model


def _random_params(model, shape: tuple) -> dict:
    """Normal latent kernels, batch-norm scales near 1 and biases near 0."""
    import numpy as np
    from flax import traverse_util

    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct((1, *shape), jax.numpy.float32),
    )
    rng = np.random.default_rng(0)
    flat = traverse_util.flatten_dict(shapes["params"])
    base = {"scale": 1.0, "bias": 0.0}
    spread = {"scale": 0.1, "bias": 0.1}
    params = {
        path: jax.numpy.asarray(
            base.get(path[-1], 0.0)
            + spread.get(path[-1], 1.0) * rng.normal(size=leaf.shape),
            leaf.dtype,
        )
        for path, leaf in flat.items()
    }
    return traverse_util.unflatten_dict(params)


def _calibrated_variables(model, shape: tuple) -> dict:
    """Random parameters; batch statistics of one train pass on random
    images (``bn_momentum=0``: the running averages are that batch's)."""
    x = jax.random.normal(jax.random.key(1), (CALIBRATION_BATCH, *shape))
    params = _random_params(model, shape)
    train_pass = jax.jit(
        lambda p, x: model.clone(bn_momentum=0.0).apply(
            {"params": p}, x, train=True, mutable=["batch_stats"]
        )[1]
    )
    return {"params": params, **train_pass(params, x)}


def _export_and_load(model, variables) -> tuple:
    """``(PackedSizes, PackedModel)`` through a temporary file."""
    from bnnjax import export

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.bnnjax")
        sizes = export.export_model(model, variables, path)
        return sizes, export.load(path)


def _layer_inputs(packed_model) -> dict:
    """How many binary layers take bits (XNOR) and how many take reals."""
    ops = packed_model.header["program"]["ops"]
    kinds = [
        op["input"] for op in ops if op["op"] in ("binary_conv", "binary_dense")
    ]
    if kinds[1:] != ["bits"] * (len(kinds) - 1):
        raise AssertionError(f"not fully binary after the first: {kinds}")
    return {
        "xnor_layers": kinds.count("bits"),
        "real_input_layers": len(kinds) - kinds.count("bits"),
    }


def _agreement(float_fn, variables, packed_model, x) -> dict:
    """Argmax agreement (checked to be 1.0) and the largest logit gap."""
    import numpy as np

    from bnnjax import export

    want = np.asarray(float_fn(variables, x))
    got = np.asarray(export.predict(packed_model, x))
    agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    if agreement != 1.0:
        raise AssertionError(f"argmax agreement {agreement} != 1.0")
    return {
        "argmax_agreement": agreement,
        "max_abs_logit_difference": float(np.abs(got - want).max()),
    }


def _time_network(float_fn, variables, packed_model, x, rounds, calls):
    """Interleaved rounds: float32 ``apply`` against ``predict``."""
    from bnnjax import export

    variants = {
        "float32": (float_fn, (variables, x)),
        "packed": (lambda x: export.predict(packed_model, x), (x,)),
    }
    return packed_inference.interleaved(variants, rounds, calls)


def bench_networks(
    shapes: Sequence[tuple[int, int, int]],
    width: float,
    batches: Sequence[int],
    rounds: int,
    calls: int,
    env: dict,
    out: str | None,
) -> None:
    """One line per input shape and batch: predict against the float32."""
    model = _cnn(width)
    float_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    for shape in shapes:
        variables = _calibrated_variables(model, shape)
        sizes, packed_model = _export_and_load(model, variables)
        layers = _layer_inputs(packed_model)
        for batch in batches:
            x = jax.random.normal(jax.random.key(100 + batch), (batch, *shape))
            check = _agreement(float_fn, variables, packed_model, x)
            args = (float_fn, variables, packed_model, x, rounds, calls)
            results = _time_network(*args)
            _line(
                out,
                benchmark="packed_cnn",
                model="BinaryNetCNN",
                width_multiplier=width,
                pad_value=PAD_VALUE,
                input_shape=list(shape),
                batch=batch,
                variant="packed",
                **_speedup_fields(results, "packed"),
                **check,
                **layers,
                file_bytes=sizes.file_bytes,
                float32_bytes=sizes.float32_bytes,
                compression_ratio=sizes.compression_ratio,
                rounds=rounds,
                **env,
            )


def _ints(text: str, sep: str = ",") -> list[int]:
    """``"1,64"`` as ``[1, 64]`` (any separator)."""
    return [int(v) for v in text.split(sep) if v]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the layer and network benchmarks; returns the exit status."""
    args = _parse(argv)
    env = _env.environment()
    batches = _ints(args.batches)
    timing = (args.rounds, args.calls, env, args.out)
    if args.only in (None, "layers"):
        cases = [tuple(_ints(c, ":")) for c in args.cases.split(",") if c]
        bench_layers(cases[: args.limit], batches, *timing)
    if args.only in (None, "networks"):
        shapes = [tuple(_ints(s, "x")) for s in args.inputs.split(",") if s]
        bench_networks(shapes, args.width, batches, *timing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
