"""Command-line interface: ``bnnjax <command> ...``.

``main(argv)`` is the only entry point and the only place that prints.
Commands:

* ``demo``: a short demonstration of the binarizer and its surrogate
  gradients, and a check of the founding method's scale invariance.
* ``train``: train a binary network (:func:`bnnjax.train.run`) with a
  progress bar on stderr, then print one JSON line of results on stdout.
* ``compare``: a method-comparison grid (:mod:`bnnjax.compare`).
* ``summary``: the memory table of a model configuration.
* ``export``: pack a trained run into a 1-bit model file
  (:mod:`bnnjax.export`), verifying its predictions against the float
  model.
* ``predict``: evaluate a packed model file on a dataset's test split.

Exit status: 0 on success; 2 for invalid arguments (unknown names,
impossible values); 1 when the run cannot proceed (missing data, a run
directory that is not empty, a corrupt checkpoint, a non-finite loss);
130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM). An
interrupted, terminated or killed ``train`` keeps its last complete
checkpoint; ``--resume`` continues from it to the same final parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import bnnjax
from bnnjax import _argtypes, _cli_compare, distributed
from bnnjax import checkpoint as checkpoint_lib
from bnnjax import data as data_lib
from bnnjax import export as export_lib
from bnnjax import presets as presets_lib
from bnnjax import train as train_lib

_DEMO_POINTS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
_DEMO_SCALES = (1e-3, 1.0, 1e3)


def _demo_results(seed: int) -> dict:
    """Computes the demo's numbers with the public API."""
    points = jnp.array(_DEMO_POINTS)
    slopes = {}
    for name in bnnjax.DETERMINISTIC_SURROGATE_NAMES:

        def total(v, name=name):
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


def _print_demo(results: dict, out) -> None:
    def p(*parts):
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
    p("2. Backward: d binarize(x) / dx (no scale; EDE at progress 0.5)")
    header = (
        "   " + "x".ljust(15) + "".join(f"{x:>8.1f}" for x in results["points"])
    )
    p(header)
    for name, slopes in results["surrogate_slopes"].items():
        p("   " + name.ljust(15) + "".join(f"{g:>8.3f}" for g in slopes))
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


def _devices(text: str) -> int | None:
    return None if text == "all" else _argtypes.positive_int(text)


def _method(text: str) -> str | _cli_compare.compare_lib.MethodSpec:
    """``NAME`` stays a string; ``NAME:OPTION=VALUE...`` a MethodSpec."""
    try:
        spec = _cli_compare.parse_method(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec if spec.options else spec.name


def _method_table() -> str:
    lines = ["methods (--method) and their default learning rates:"]
    for name in presets_lib.METHOD_NAMES:
        preset = presets_lib.get_preset(name)
        lines.append(
            f"  {name:<23} lr {preset.learning_rate:g}, real lr "
            f"{preset.real_learning_rate:g}  ({preset.reference})"
        )
    lines.append("options of each method's parts (--method NAME:OPTION=VALUE):")
    for name in presets_lib.METHOD_NAMES:
        options = presets_lib.method_options(name)
        if options:
            listed = ", ".join(f"{k}={v}" for k, v in options.items())
            lines.append(f"  {name:<23} {listed}")
    return "\n".join(lines)


def _add_train_arguments(
    parser: argparse.ArgumentParser, *, suppress: bool = False
) -> None:
    """Adds the train flags; ``suppress`` leaves unset flags out."""
    d = train_lib.TrainConfig()

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--dataset",
        default=default(d.dataset),
        help="'mnist-sample' (embedded 6000-digit MNIST sample), a TFDS "
        "name (mnist, fashion_mnist, cifar10, ...), 'idx:DIR' (MNIST-family "
        "IDX files) or 'cifar:DIR' (binary CIFAR-10) (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=default(None),
        metavar="DIR",
        help="TFDS data directory for a TFDS --dataset (default: "
        "$TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--model",
        choices=("mlp", "cnn", "resnet20", "resnet18"),
        default=default(d.model),
        help="architecture (default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        type=_method,
        default=default(d.method),
        metavar="NAME[:OPTION=VALUE...]",
        help="training method (the table below lists them and their "
        "options), optionally with options of its parts, e.g. "
        "scaled_sigmoid:k=4:scale=mean_abs or "
        "scaled_sigmoid:scale_adaptive=false (default: %(default)s)",
    )
    parser.add_argument(
        "--binary-activations",
        action=argparse.BooleanOptionalAction,
        default=default(d.binary_activations),
        help="binarize activations with the method's rule (default: off "
        "for mlp, which then uses ReLU; always on for cnn and resnets)",
    )
    parser.add_argument(
        "--epochs",
        type=_argtypes.positive_int,
        default=default(d.epochs),
        help="passes over the training split (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_argtypes.positive_int,
        default=default(d.batch_size),
        help="examples per step and seed (default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=_argtypes.positive_float,
        default=default(d.learning_rate),
        help="learning rate of the binary weights (Bop: its gamma) "
        "(default: the method's, listed below)",
    )
    parser.add_argument(
        "--real-lr",
        type=_argtypes.positive_float,
        default=default(d.real_learning_rate),
        help="learning rate of the real parameters (default: the method's)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("adam", "adamw", "sgd"),
        default=default(d.optimizer),
        help="base optimizer (default: %(default)s)",
    )
    parser.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default=default(d.schedule),
        help="learning-rate schedule (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_argtypes.seeds,
        action="append",
        default=argparse.SUPPRESS if suppress else None,
        metavar="SEED[,SEED...]",
        help="seed; repeat it or give a comma list to train several seeds "
        f"at once (default: {','.join(map(str, d.seeds))})",
    )
    parser.add_argument(
        "--hidden",
        type=_argtypes.widths,
        default=default(d.hidden),
        metavar="W[,W...]",
        help=f"MLP hidden widths (default: {','.join(map(str, d.hidden))})",
    )
    parser.add_argument(
        "--val-fraction",
        type=_argtypes.fraction,
        default=default(d.val_fraction),
        help="fraction of the training data held out for validation "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=default(None),
        metavar="DIR",
        help="run directory; must not exist or be empty unless --resume "
        "(default: runs/<YYYYmmdd-HHMMSS>)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        default=default(False),
        help="continue the run in --out from its last checkpoint, with its "
        "saved settings (flags given again must match; --epochs may grow)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=default(True),
        help="show a progress bar on stderr (default: on)",
    )
    parser.add_argument(
        "--devices",
        type=_devices,
        default=default(None),
        metavar="N|all",
        help="devices to train on, data-parallel; --batch-size is the "
        "global batch and must be a multiple of N (default: all, or the "
        "most devices the batch size splits over)",
    )
    parser.add_argument(
        "--coordinator-address",
        default=default(None),
        metavar="HOST:PORT",
        help="multi-host training: process 0's address, the same on every "
        "host (default: $JAX_COORDINATOR_ADDRESS; unset: one process)",
    )
    parser.add_argument(
        "--num-processes",
        type=_argtypes.positive_int,
        default=default(None),
        help="multi-host training: number of processes (default: "
        "$JAX_NUM_PROCESSES, or detected by JAX on SLURM/MPI/TPU)",
    )
    parser.add_argument(
        "--process-id",
        type=_argtypes.non_negative_int,
        default=default(None),
        help="multi-host training: this process's id, 0 to N-1 (default: "
        "$JAX_PROCESS_ID, or detected by JAX)",
    )


def _build_parser(*, suppress: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnnjax",
        description="Binarized neural networks in JAX and Flax.",
    )
    parser.add_argument(
        "--version", action="version", version=f"bnnjax {bnnjax.__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="demonstrate the binarizer and its surrogate gradients",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    demo.add_argument(
        "--json", action="store_true", help="print one JSON line instead"
    )
    train = commands.add_parser(
        "train",
        help="train a binary network; prints one JSON line of results",
        description=(
            "Train a binary network and print one JSON line of results on\n"
            "stdout (a progress bar goes to stderr). With no arguments: the\n"
            "founding method on an MLP with binary weights and real\n"
            "activations, on the MNIST sample shipped with bnnjax."
        ),
        epilog=_method_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_arguments(train, suppress=suppress)
    d = train_lib.TrainConfig()
    compare = commands.add_parser(
        "compare",
        help="compare training methods on equal terms; one JSON line each",
        description=(
            "Train a grid of methods x seeds on one dataset and model under "
            "one budget; each method's learning rate (and its own "
            "hyperparameters) is chosen on the validation split; the test "
            "split is evaluated once per final run. Prints one JSON line "
            "per method (test_accuracy_mean, test_accuracy_std, ...)."
        ),
    )
    _cli_compare.add_compare_arguments(compare)
    export = commands.add_parser(
        "export",
        help="pack a trained run into a 1-bit model file",
        description=(
            "Pack a run's trained model (one seed, one checkpoint) into a "
            "single self-describing file: binary kernels at 1 bit, batch "
            "norm folded, checksummed (see bnnjax.export). Prints one JSON "
            "line with file_bytes and float32_bytes; with --verify (the "
            "default) also the float and packed models' test accuracy and "
            "how many predictions agree."
        ),
    )
    export.add_argument("run_dir", help="a run directory of `bnnjax train`")
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="file to write"
    )
    export.add_argument(
        "--epoch",
        type=_argtypes.positive_int,
        default=None,
        help="which checkpoint (default: the latest)",
    )
    export.add_argument(
        "--seed",
        type=int,
        default=None,
        help="which seed of a multi-seed run (default: its first)",
    )
    export.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare packed and float predictions on the run's test split "
        "(default: on)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace FILE if it exists (default: refuse)",
    )
    predict = commands.add_parser(
        "predict",
        help="evaluate a packed model file on a dataset",
        description=(
            "Load a packed model file (verifying its checksum), run packed "
            "inference on a dataset's test split and print one JSON line "
            "with test_accuracy, file_bytes and the compression ratio "
            "against the float32 checkpoint."
        ),
    )
    predict.add_argument("file", help="a file written by `bnnjax export`")
    predict.add_argument(
        "--dataset",
        default=None,
        help="dataset spec as for train (default: the one the model was "
        "trained on, stored in the file)",
    )
    predict.add_argument(
        "--batch-size",
        type=_argtypes.positive_int,
        default=1000,
        help="examples per inference call (default: %(default)s)",
    )
    summary = commands.add_parser(
        "summary",
        help="print the memory table of a model configuration",
        description=(
            "Print the per-tensor memory table of a model configuration: "
            "binary kernels at 1 bit deployed, everything else at its "
            "dtype; totals and the compression ratio against float32."
        ),
    )
    summary.add_argument(
        "--model",
        choices=tuple(_SUMMARY_INPUTS),
        default=d.model,
        help="architecture (default: %(default)s)",
    )
    summary.add_argument(
        "--method",
        choices=presets_lib.PRESET_NAMES,
        default=d.method,
        help="training method (default: %(default)s)",
    )
    summary.add_argument(
        "--binary-activations",
        action=argparse.BooleanOptionalAction,
        default=d.binary_activations,
        help="binarize activations (default: as in train)",
    )
    summary.add_argument(
        "--hidden",
        type=_argtypes.widths,
        default=d.hidden,
        metavar="W[,W...]",
        help=f"MLP hidden widths (default: {','.join(map(str, d.hidden))})",
    )
    summary.add_argument(
        "--num-classes",
        type=_argtypes.positive_int,
        default=10,
        help="number of outputs (default: %(default)s)",
    )
    summary.add_argument(
        "--json", action="store_true", help="print one JSON line instead"
    )
    return parser


# One example input per model (batch 1), for the abstract initialization.
_SUMMARY_INPUTS = {
    "mlp": (1, 784),
    "cnn": (1, 32, 32, 3),
    "resnet20": (1, 32, 32, 3),
    "resnet18": (1, 224, 224, 3),
}


def _summary(args: argparse.Namespace) -> int:
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
    sample = jnp.zeros(_SUMMARY_INPUTS[args.model], jnp.float32)
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


def _float_logits(model, variables, images, batch_size: int) -> np.ndarray:
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


def _export(args: argparse.Namespace) -> int:
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
    run_dir = os.path.abspath(args.run_dir)
    try:
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
        return fail(str(e), 1)
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


def _predict(args: argparse.Namespace) -> int:
    def fail(message: str, status: int) -> int:
        print(f"bnnjax predict: error: {message}", file=sys.stderr)
        return status

    try:
        packed = export_lib.load(args.file)
    except (OSError, ValueError) as e:
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
        dataset = data_lib.load_dataset(spec)
    except (TypeError, ValueError) as e:
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


_FLAG_TO_FIELD = {
    "dataset": "dataset",
    "data_dir": "data_dir",
    "model": "model",
    "method": "method",
    "binary_activations": "binary_activations",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "real_lr": "real_learning_rate",
    "optimizer": "optimizer",
    "schedule": "schedule",
    "seed": "seeds",
    "hidden": "hidden",
    "val_fraction": "val_fraction",
    "devices": "devices",
}


def _train_config(
    args: argparse.Namespace, explicit: dict[str, Any]
) -> train_lib.TrainConfig:
    """Builds the TrainConfig from the flags (and, resuming, config.json).

    Raises:
      ValueError: for invalid or contradictory flags.
      FileNotFoundError: resuming a directory without a run.
    """
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR, the run to continue.")
    if "hidden" in explicit and args.model != "mlp":
        raise ValueError(
            f"--hidden sets MLP widths; it does not apply to --model "
            f"{args.model}."
        )
    values: dict[str, Any] = {}
    if args.resume:
        out = os.path.abspath(args.out)
        if not os.path.isfile(os.path.join(out, checkpoint_lib.CONFIG_FILE)):
            raise FileNotFoundError(
                f"Nothing to resume in {out!r}: it holds no "
                f"{checkpoint_lib.CONFIG_FILE}."
            )
        values = checkpoint_lib.read_config(out)
        flags = explicit
    else:
        flags = vars(args)
    for flag, field in _FLAG_TO_FIELD.items():
        if flag in flags:
            values[field] = flags[flag]
    method = values.get("method")
    if isinstance(method, _cli_compare.compare_lib.MethodSpec):
        values["method"] = method.name
        values["method_options"] = dict(method.options)
    elif "method" in flags:
        values["method_options"] = None
    if values.get("seeds") is None:
        values.pop("seeds", None)
    elif "seed" in flags:  # --seed 0,1 --seed 2: a list of lists
        values["seeds"] = tuple(s for group in flags["seed"] for s in group)
    values["out_dir"] = args.out or train_lib.default_out_dir()
    return train_lib.TrainConfig.from_dict(values)


class _Progress:
    """A tqdm bar on stderr fed by :func:`bnnjax.train.run`'s callbacks."""

    def __init__(self, enabled: bool, desc: str):
        self._enabled = enabled
        self._desc = desc
        self._bar = None

    def on_step(self, info: train_lib.StepInfo) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # no bar without tqdm
                self._enabled = False
                return
            self._bar = tqdm(
                total=info.total_steps,
                initial=info.step - 1,
                desc=self._desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self._bar.set_postfix(
            epoch=info.epoch,
            loss=f"{info.loss:.4f}",
            acc=f"{info.accuracy:.3f}",
            refresh=False,
        )
        self._bar.update(1)

    def on_epoch(self, epoch: int, records: list[dict[str, Any]]) -> None:
        if not self._enabled or self._bar is None:
            return
        val = np.mean([r["val_accuracy"] for r in records])
        flips = np.mean([r["flip_ratio"] for r in records])
        self._bar.write(
            f"epoch {epoch}: train loss "
            f"{np.mean([r['train_loss'] for r in records]):.4f}, val "
            f"accuracy {val:.4f}, flip ratio {flips:.2e}",
            file=sys.stderr,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so the run stops the same way."""


class _StopOnSignal:
    """Stops a training run at a step boundary on SIGINT or SIGTERM.

    Raising from a signal handler can land anywhere, including inside a
    checkpoint write or the close of an asyncio loop that orbax runs on the
    main thread, and leave the interpreter with a half-closed object whose
    finaliser fails at exit. Once the first step has run, the handler only
    records the signal and the run stops at the next step or epoch
    boundary, where nothing is half done. Before that (data loading,
    compilation) and on a second signal the handler raises at once.
    """

    def __init__(self) -> None:
        self.armed = False
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.armed and self._signum is None:
            self._signum = signum
            return
        self._raise(signum)

    def check(self) -> None:
        """Arms the handler, then raises if a signal came in meanwhile."""
        self.armed = True
        if self._signum is not None:
            self._raise(self._signum)

    @staticmethod
    def _raise(signum: int) -> None:
        if signum == signal.SIGTERM:
            raise _Terminated
        raise KeyboardInterrupt


def _train(args: argparse.Namespace, explicit: dict[str, Any]) -> int:
    def fail(message: str, status: int) -> int:
        print(f"bnnjax train: error: {message}", file=sys.stderr)
        return status

    # Join a multi-process job before anything touches a device.
    try:
        distributed.initialize(
            args.coordinator_address, args.num_processes, args.process_id
        )
    except ValueError as e:
        return fail(str(e), 2)
    except RuntimeError as e:
        return fail(f"cannot join the multi-process job: {e}", 1)
    try:
        config = _train_config(args, explicit)
    except (ValueError, TypeError) as e:
        return fail(str(e), 2)
    except OSError as e:
        return fail(str(e), 1)
    primary = distributed.is_primary()
    progress = _Progress(
        args.progress and primary, f"{config.method} {config.model}"
    )
    stop = _StopOnSignal()

    def on_step(info: train_lib.StepInfo) -> None:
        progress.on_step(info)
        stop.check()

    def on_epoch(epoch: int, records: list[dict[str, Any]]) -> None:
        progress.on_epoch(epoch, records)
        stop.check()

    stop.install()
    try:
        results = train_lib.run(
            config, resume=args.resume, on_step=on_step, on_epoch=on_epoch
        )
    except (
        OSError,
        ValueError,
        ImportError,
        checkpoint_lib.CheckpointError,
        data_lib.DatasetUnavailableError,
        train_lib.NonFiniteLossError,
    ) as e:
        progress.close()
        return fail(str(e), 1)
    except KeyboardInterrupt as e:
        progress.close()
        where = config.out_dir or "the run directory"
        what = "terminated" if isinstance(e, _Terminated) else "interrupted"
        print(
            f"bnnjax train: {what}; the last complete checkpoint is kept; "
            f"continue with `bnnjax train --resume --out {where}`.",
            file=sys.stderr,
        )
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        stop.restore()
    progress.close()
    if primary:
        print(json.dumps(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit status.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      0 on success, 2 for invalid settings, 1 when a run fails, 130 when
      interrupted, 143 when terminated by SIGTERM.

    Raises:
      SystemExit: from argparse, for ``--help``/``--version`` (code 0) and
        unparsable arguments such as an unknown choice or flag (code 2,
        usage on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        results = _demo_results(args.seed)
        if args.json:
            print(json.dumps(results))
        else:
            _print_demo(results, sys.stdout)
        return 0
    if args.command == "summary":
        return _summary(args)
    if args.command == "compare":
        return _cli_compare.run_compare(args)
    if args.command == "export":
        return _export(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "train":
        explicit = vars(_build_parser(suppress=True).parse_args(argv))
        return _train(args, explicit)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
