"""The ``demo``, ``summary``, ``export`` and ``predict`` commands of the CLI.

Each ``run_*`` function takes the parsed arguments of its command (see
:mod:`bnnjax.cli`), prints its result and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

import bnnjax
from bnnjax import checkpoint as checkpoint_lib
from bnnjax import data as data_lib
from bnnjax import export as export_lib
from bnnjax import train as train_lib
from bnnjax.training import rundir

_DEMO_POINTS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
_DEMO_SCALES = (1e-3, 1.0, 1e3)


def demo_results(seed: int) -> dict[str, Any]:
    """Computes the demo's numbers with the public API."""
    points = jnp.array(_DEMO_POINTS)
    slopes = {}
    for name in bnnjax.DETERMINISTIC_SURROGATE_NAMES:

        def total(v: jax.Array, name: str = name) -> jax.Array:
            return bnnjax.binarize(v, name, None, progress=0.5).sum()

        slopes[name] = [round(float(g), 4) for g in jax.grad(total)(points)]

    w = 0.05 * jax.random.normal(jax.random.key(seed), (256, 128))
    binary = bnnjax.binarize(w, axis=-1)
    alpha = bnnjax.mean_abs_dev(w, (0,))
    invariance = {}
    for name in ("scaled_sigmoid", "clipped_ste"):
        rows = []
        for c in _DEMO_SCALES:
            v = jnp.float32(c) * w
            _, vjp = jax.vjp(
                lambda u, name=name: bnnjax.binarize(u, name, axis=-1), v
            )
            (g,) = vjp(jnp.ones_like(v))
            g = np.asarray(g)
            rows.append(
                {
                    "c": c,
                    "mean_abs_grad": float(np.mean(np.abs(g))),
                    "fraction_with_gradient": float(
                        np.mean(np.abs(g) > 1e-3 * np.max(np.abs(g)))
                    ),
                }
            )
        invariance[name] = rows
    return {
        "bnnjax": bnnjax.__version__,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "points": list(_DEMO_POINTS),
        "surrogate_slopes": slopes,
        "weight_shape": list(w.shape),
        "distinct_values_per_channel": int(
            max(len(np.unique(col)) for col in np.asarray(binary).T)
        ),
        "contains_zero": bool(np.any(np.asarray(binary) == 0)),
        "alpha_equals_mean_abs_dev": bool(
            np.allclose(np.abs(np.asarray(binary)), np.asarray(alpha))
        ),
        "invariance": invariance,
    }


def print_demo(results: dict[str, Any], out: IO[str]) -> None:
    def p(*parts: object) -> None:
        print(*parts, file=out)

    p(
        f"bnnjax {results['bnnjax']} demo (jax {results['jax']}, "
        f"{results['device']})"
    )
    p()
    p(
        "1. Forward: binarize(w, axis=-1) on a "
        f"{tuple(results['weight_shape'])} Gaussian weight gives "
        f"{results['distinct_values_per_channel']} values per output channel,"
    )
    p(
        "   +-alpha_j with alpha_j = mean |w_j - mean(w_j)| "
        f"({results['alpha_equals_mean_abs_dev']}); any exact zeros: "
        f"{results['contains_zero']}."
    )
    p()
    p(
        "2. Backward: d binarize(x) / dx (no scale; EDE and the annealed "
        "sigmoid at progress 0.5)"
    )
    width = 2 + max(map(len, results["surrogate_slopes"]))
    header = (
        "   "
        + "x".ljust(width)
        + "".join(f"{x:>8.1f}" for x in results["points"])
    )
    p(header)
    for name, slopes in results["surrogate_slopes"].items():
        p("   " + name.ljust(width) + "".join(f"{g:>8.3f}" for g in slopes))
    p("   (scaled_sigmoid's width is the spread of this 7-point tensor)")
    p()
    p("3. Founding property: scale the weights by c; mean |gradient| and the")
    p("   fraction of weights that still get a gradient:")
    p(f"   {'c':<8}{'scaled_sigmoid':>26}{'clipped_ste':>26}")
    rows = zip(*results["invariance"].values(), strict=True)
    for founding, clipped in rows:
        p(
            f"   {founding['c']:<8g}"
            f"{founding['mean_abs_grad']:>14.4g}"
            f"{founding['fraction_with_gradient']:>12.1%}"
            f"{clipped['mean_abs_grad']:>14.4g}"
            f"{clipped['fraction_with_gradient']:>12.1%}"
        )
    p()
    p("The scaled sigmoid's gradient does not depend on c. The fixed window")
    p("becomes a plain STE for small weights (one slope for all, times a tiny")
    p("alpha) and reaches almost none of the large ones.")


def run_demo(args: argparse.Namespace) -> int:
    """``bnnjax demo``: prints the demo's numbers (text or one JSON line)."""
    results = demo_results(args.seed)
    if args.json:
        print(json.dumps(results))
    else:
        print_demo(results, sys.stdout)
    return 0


# One example input per model (batch 1), for the abstract initialization.
SUMMARY_INPUTS = {
    "mlp": (1, 784),
    "cnn": (1, 32, 32, 3),
    "tutorial_cnn": (1, 28, 28, 1),
    "resnet20": (1, 32, 32, 3),
    "resnet18": (1, 224, 224, 3),
    "reactnet": (1, 32, 32, 3),
}


def run_summary(args: argparse.Namespace) -> int:
    try:
        config = train_lib.TrainConfig(
            model=args.model,
            method=args.method,
            binary_activations=args.binary_activations,
            hidden=args.hidden,
        )
    except (ValueError, TypeError) as e:
        print(f"bnnjax summary: error: {e}", file=sys.stderr)
        return 2
    model = config.make_model(args.num_classes)
    sample = jnp.zeros(SUMMARY_INPUTS[args.model], jnp.float32)
    shapes = jax.eval_shape(
        lambda k: model.init(k, sample, train=False, progress=jnp.float32(0)),
        jax.random.key(0),
    )
    variables = jax.tree.map(lambda v: np.zeros(v.shape, v.dtype), shapes)
    table = bnnjax.summary(variables)
    if args.json:
        print(json.dumps(table.to_dict()))
    else:
        print(table)
    return 0


def _select_seed(config: train_lib.TrainConfig, seed: int | None) -> int:
    seeds = list(config.seeds)
    if seed is None:
        return 0
    if seed not in seeds:
        raise ValueError(
            f"--seed {seed} was not trained in this run; its seeds are {seeds}."
        )
    return seeds.index(seed)


def _float_logits(
    model: Any, variables: Any, images: np.ndarray, batch_size: int
) -> np.ndarray:
    apply = jax.jit(
        lambda v, x: model.apply(
            v, data_lib.to_float(x), train=False, progress=jnp.float32(1)
        )
    )
    parts = [
        np.asarray(apply(variables, images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


def _not_a_run_dir(path: str) -> str | None:
    """Why ``path`` is not a run directory of ``bnnjax train``, or None."""
    problem = rundir.run_dir_problem(path)
    if problem is None:
        return None
    return (
        f"{path} {problem}; give a run directory (the --out of `bnnjax train`)."
    )


def _unwritable_output(output: str) -> str | None:
    """Why the file ``output`` cannot be written, or ``None``."""
    folder = os.path.dirname(output)
    fix = "give -o a file in a folder you can write to."
    if not os.path.exists(folder):
        return (
            f"cannot write {output}: the folder {folder} does not exist; {fix}"
        )
    if not os.path.isdir(folder):
        return f"cannot write {output}: {folder} is a file, not a folder; {fix}"
    if not os.access(folder, os.W_OK):
        return (
            f"cannot write {output}: the folder {folder} is not writable; {fix}"
        )
    return None


def run_export(args: argparse.Namespace) -> int:
    def fail(message: str, status: int) -> int:
        print(f"bnnjax export: error: {message}", file=sys.stderr)
        return status

    output = os.path.abspath(args.output)
    if os.path.exists(output) and not args.force:
        return fail(
            f"{output} exists; pass --force to replace it (the old file is "
            "only replaced once the new one is complete).",
            1,
        )
    if os.path.isdir(output):
        return fail(f"{output} is a directory; give a file name.", 2)
    problem = _unwritable_output(output)
    if problem is not None:
        return fail(problem, 2)
    run_dir = os.path.abspath(args.run_dir)
    problem = _not_a_run_dir(run_dir)
    if problem is not None:
        return fail(problem, 2)
    try:
        # A training process writing there meanwhile would be refused (and
        # this export refused while one trains there).
        with rundir.lock_run_dir(run_dir, purpose="export", create=False):
            config = train_lib.TrainConfig.from_dict(
                checkpoint_lib.read_config(run_dir)
            )
            index = _select_seed(config, args.seed)
            model, state, info = train_lib.load_checkpoint(
                run_dir, epoch=args.epoch
            )
    except (ValueError, TypeError) as e:
        return fail(str(e), 2)
    except (OSError, checkpoint_lib.CheckpointError) as e:
        return fail(str(e), 1)
    variables = {
        "params": jax.tree.map(lambda a: a[index], state.params),
        "batch_stats": jax.tree.map(lambda a: a[index], state.batch_stats),
    }
    seed = config.seeds[index]
    metadata = {
        "run_dir": run_dir,
        "dataset": config.dataset,
        "method": config.method,
        "model": config.model,
        "binary_activations": config.activations_binary,
        "seed": seed,
        "epoch": int(info["epoch"]),
        "input_scaling": "uint8 pixels / 255",
    }
    try:
        packed = export_lib.pack_model(model, variables, metadata=metadata)
        file_bytes = export_lib.save(packed, output)
    except (TypeError, ValueError) as e:
        return fail(f"cannot export this run: {e}", 1)
    except OSError as e:
        reason = e.strerror or str(e)
        return fail(f"cannot write {output}: {reason}; nothing was written.", 1)
    result: dict[str, Any] = {
        "file": output,
        "file_bytes": file_bytes,
        "float32_bytes": packed.float32_bytes,
        "compression_ratio": packed.float32_bytes / file_bytes,
        "deploy_bytes": int(packed.header["deploy_bytes"]),
        "architecture": packed.architecture,
        **metadata,
    }
    if args.verify:
        try:
            dataset = data_lib.load_dataset(
                config.dataset, data_dir=config.data_dir
            )
        except (OSError, ValueError, ImportError, RuntimeError) as e:
            return fail(f"exported, but cannot verify: {e}", 1)
        images, labels = dataset.test_images, dataset.test_labels
        want = _float_logits(model, variables, images, 1000)
        got = np.asarray(
            export_lib.predict(
                packed, data_lib.to_float(images), batch_size=1000
            )
        )
        result.update(
            {
                "test_examples": len(labels),
                "float_test_accuracy": float(
                    np.mean(want.argmax(-1) == labels)
                ),
                "packed_test_accuracy": float(
                    np.mean(got.argmax(-1) == labels)
                ),
                "prediction_agreement": float(
                    np.mean(want.argmax(-1) == got.argmax(-1))
                ),
                "max_abs_logit_difference": float(np.max(np.abs(want - got))),
                "max_abs_logit": float(np.max(np.abs(want))),
            }
        )
    print(json.dumps(result))
    return 0


def _not_a_model_file(path: str) -> str | None:
    """Why ``path`` cannot be a model file of ``bnnjax export``, or None."""
    hint = "give a file written by `bnnjax export RUN_DIR -o FILE`"
    if not os.path.exists(path):
        return f"{path} does not exist; {hint}."
    if os.path.isdir(path):
        return f"{path} is a directory; {hint}."
    return None


def run_predict(args: argparse.Namespace) -> int:
    def fail(message: str, status: int) -> int:
        print(f"bnnjax predict: error: {message}", file=sys.stderr)
        return status

    problem = _not_a_model_file(args.file)
    if problem is not None:
        return fail(problem, 2)
    try:
        packed = export_lib.load(args.file)
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
        return fail(f"cannot read {args.file}: {reason}.", 1)
    except ValueError as e:
        return fail(str(e), 1)
    if "model" in packed.header:
        return fail(
            f"{args.file} holds a model of your own "
            f"({packed.header['model']['class']}); its code is not stored "
            "in the file: run it with bnnjax.export.predict(packed, images, "
            "model=...).",
            2,
        )
    spec = args.dataset or packed.metadata.get("dataset")
    if spec is None:
        return fail(
            f"{args.file} does not record its dataset; pass --dataset "
            "(e.g. mnist-sample, idx:DIR, cifar:DIR or a TFDS name).",
            2,
        )
    try:
        dataset = data_lib.load_dataset(spec, data_dir=args.data_dir)
    except (data_lib.DatasetPathError, TypeError, ValueError) as e:
        return fail(str(e), 2)
    except (OSError, ImportError, RuntimeError) as e:
        return fail(str(e), 1)
    images = data_lib.to_float(dataset.test_images)
    try:
        # Compile (and check shapes) outside the timed call.
        export_lib.predict(
            packed, images[: args.batch_size]
        ).block_until_ready()
        start = time.perf_counter()
        logits = export_lib.predict(packed, images, batch_size=args.batch_size)
        predictions = np.asarray(logits.argmax(-1))
        seconds = time.perf_counter() - start
    except ValueError as e:
        return fail(f"the model does not fit dataset {spec!r}: {e}", 2)
    if logits.shape[-1] != dataset.num_classes:
        return fail(
            f"the model has {logits.shape[-1]} outputs but dataset {spec!r} "
            f"has {dataset.num_classes} classes.",
            2,
        )
    file_bytes = os.path.getsize(args.file)
    print(
        json.dumps(
            {
                "file": os.path.abspath(args.file),
                "dataset": spec,
                "architecture": packed.architecture,
                "test_accuracy": float(
                    np.mean(predictions == dataset.test_labels)
                ),
                "test_examples": len(predictions),
                "file_bytes": file_bytes,
                "float32_bytes": packed.float32_bytes,
                "compression_ratio": packed.float32_bytes / file_bytes,
                "seconds": seconds,
                "examples_per_second": len(predictions) / seconds,
                "device": str(jax.devices()[0]),
            }
        )
    )
    return 0
