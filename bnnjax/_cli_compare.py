"""The ``bnnjax compare`` subcommand: flags and the run.

:func:`add_compare_arguments` adds the flags to an ``argparse`` parser
(``bnnjax.cli`` gives it the ``compare`` subparser) and
:func:`run_compare` runs :func:`bnnjax.compare.compare` from the parsed
flags. stdout gets one JSON line per method (``method``,
``test_accuracy_mean``, ``test_accuracy_std``, ... with the device and
versions); stderr gets a line per finished run and the Markdown table.
With ``--out DIR`` the directory receives ``runs.jsonl`` (the settings,
then every run per seed, appended as runs finish), ``results.jsonl``
(one line per method), ``table.md`` and the plots.

Exit status: 0 on success; 2 for invalid settings (an unknown method or
option, an impossible value); 1 when the comparison cannot proceed
(missing data, a non-empty ``--out``); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bnnjax import _argtypes
from bnnjax import compare as compare_lib
from bnnjax import presets as presets_lib
from bnnjax import train as train_lib

__all__ = ["add_compare_arguments", "parse_method", "run_compare"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_method(text: str) -> compare_lib.MethodSpec:
    """Parses ``name`` or ``name:option=value[:option=value...]``.

    Each value is read as the type of the option's default: a number for
    numeric options, ``true``/``false`` for switches, the text for names
    (e.g. ``scale=mean_abs``).

    Args:
      text: e.g. ``"bnn"``, ``"scaled_sigmoid:k=4"`` or
        ``"scaled_sigmoid:scale_adaptive=false"``.

    Returns:
      The :class:`bnnjax.compare.MethodSpec` (labelled ``text`` with
      numbers normalised, e.g. ``k=4.0`` becomes ``k=4``).

    Raises:
      ValueError: for an unknown method or option, or a value that does
        not parse, naming what is accepted.

    Example:
      >>> parse_method("scaled_sigmoid:k=4").options
      {'k': 4.0}
    """
    name, *parts = text.strip().split(":")
    if name not in presets_lib.METHOD_NAMES:
        raise ValueError(
            f"unknown method {name!r} in {text!r}; expected one of "
            f"{list(presets_lib.METHOD_NAMES)}, optionally followed by "
            ":option=value (e.g. scaled_sigmoid:k=4)"
        )
    defaults = presets_lib.method_options(name)
    options: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or not key or not raw:
            raise ValueError(
                f"bad option {part!r} in {text!r}; expected option=value, "
                f"e.g. {name}:{next(iter(defaults), 'option')}=..."
            )
        if key not in defaults:
            raise ValueError(
                f"unknown option {key!r} for method {name!r}; expected one "
                f"of {sorted(defaults) or '(none: it has no options)'}"
            )
        if key in options:
            raise ValueError(f"option {key!r} given twice in {text!r}")
        default = defaults[key]
        if isinstance(default, bool):
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError(
                    f"option {key}={raw!r} in {text!r}; expected true or false"
                )
            options[key] = raw.lower() in _TRUE
        elif isinstance(default, (int, float)):
            try:
                options[key] = float(raw)
            except ValueError:
                raise ValueError(
                    f"option {key}={raw!r} in {text!r}; expected a number"
                ) from None
        else:
            options[key] = raw
    return compare_lib.MethodSpec(name=name, options=options)


def _methods(text: str) -> list[compare_lib.MethodSpec]:
    try:
        return [parse_method(p) for p in text.split(",") if p.strip()]
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _accuracy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"expected an accuracy in (0, 1], got {text!r}"
        )
    return value


def _learning_rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if (
        not values
        or not all(0 < v < float("inf") for v in values)
        or len(set(values)) != len(values)
    ):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated positive learning rates, got "
            f"{text!r}"
        )
    return values


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``compare`` flags to ``parser``.

    Args:
      parser: the ``compare`` subparser (or a standalone parser).
    """
    d = train_lib.TrainConfig()
    parser.description = (
        "Compare training methods on one dataset and architecture under one "
        "budget: each method's learning rate (and declared options) chosen "
        "on the validation split with the tuning seeds, then trained with "
        "every seed; the test split is evaluated once per final run. "
        "Prints one JSON line per method on stdout."
    )
    parser.epilog = (
        "methods: "
        + ", ".join(presets_lib.METHOD_NAMES)
        + ". Fix options with name:option=value, e.g. "
        "scaled_sigmoid:scale=mean_abs or scaled_sigmoid:scale_adaptive="
        "false; options: "
        + "; ".join(
            f"{name} "
            + ", ".join(
                f"{k}={compare_lib._format_value(v)}"
                for k, v in presets_lib.method_options(name).items()
            )
            for name in presets_lib.METHOD_NAMES
            if presets_lib.method_options(name)
        )
        + "."
    )
    parser.add_argument(
        "--methods",
        type=_methods,
        default=",".join(compare_lib.DEFAULT_METHODS),
        metavar="M[,M...]",
        help="comma-separated methods (default: %(default)s)",
    )
    parser.add_argument(
        "--dataset",
        default=d.dataset,
        help="'mnist-sample', 'idx:DIR', 'cifar:DIR' or a TFDS name "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        choices=("mlp", "cnn", "resnet20", "resnet18"),
        default=d.model,
        help="architecture (default: %(default)s)",
    )
    parser.add_argument(
        "--hidden",
        type=_argtypes.widths,
        default=d.hidden,
        metavar="W[,W...]",
        help=f"MLP hidden widths (default: {','.join(map(str, d.hidden))})",
    )
    parser.add_argument(
        "--binary-activations",
        action=argparse.BooleanOptionalAction,
        default=d.binary_activations,
        help="binarize activations with each method's rule (default: off "
        "for mlp, on for the others)",
    )
    parser.add_argument(
        "--epochs",
        type=_argtypes.positive_int,
        default=10,
        help="epochs of the final runs (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_argtypes.positive_int,
        default=d.batch_size,
        help="examples per step and seed (default: %(default)s)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("adam", "adamw", "sgd"),
        default=d.optimizer,
        help="base optimizer (default: %(default)s)",
    )
    parser.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default=d.schedule,
        help="learning-rate schedule (default: %(default)s)",
    )
    parser.add_argument(
        "--real-lr",
        type=_argtypes.positive_float,
        default=None,
        help="learning rate of the real parameters for every method "
        "(default: each method's, 1e-3 for the built-in ones)",
    )
    parser.add_argument(
        "--seeds",
        type=_argtypes.positive_int,
        default=3,
        metavar="N",
        help="final runs use seeds 0..N-1, trained together "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tune",
        choices=("grid", "lr", "none"),
        default="grid",
        help="tuning on the validation split: 'grid' (learning rates x "
        "declared options), 'lr' (learning rates only) or 'none' (each "
        "method's defaults) (default: %(default)s)",
    )
    parser.add_argument(
        "--lr-grid",
        type=_learning_rates,
        default=None,
        metavar="LR[,LR...]",
        help="learning rates searched for every method instead of its "
        "declared grid (each method's option grid stays) (default: the "
        "declared grids)",
    )
    parser.add_argument(
        "--tune-seeds",
        type=_argtypes.positive_int,
        default=1,
        metavar="N",
        help="tuning runs use seeds "
        f"{compare_lib.TUNE_SEED_OFFSET}..{compare_lib.TUNE_SEED_OFFSET}+N-1 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tune-epochs",
        type=_argtypes.positive_int,
        default=None,
        help="epochs of the tuning runs (default: --epochs)",
    )
    parser.add_argument(
        "--target-accuracy",
        type=_accuracy,
        default=0.95,
        help="validation accuracy whose epochs and seconds are reported "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--val-fraction",
        type=_argtypes.fraction,
        default=d.val_fraction,
        help="fraction of the training data held out for validation "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write runs.jsonl, results.jsonl, table.md and plots here; "
        "must not exist or be empty (default: no files)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report each finished run on stderr (default: on)",
    )


def _describe(run: compare_lib.RunResult) -> str:
    options = "".join(
        f" {k}={compare_lib._format_value(v)}" for k, v in run.options.items()
    )
    text = (
        f"[{run.phase}] {run.method}: lr {run.learning_rate:g}{options}, "
        f"seeds {','.join(map(str, run.seeds))}, val accuracy "
        f"{run.final_val_accuracy:.4f}"
    )
    if run.test_accuracy is not None:
        mean = sum(run.test_accuracy) / len(run.test_accuracy)
        text += f", test accuracy {mean:.4f}"
    return (
        text + f" ({sum(run.epoch_seconds):.1f} s training, "
        f"{run.compile_seconds:.1f} s compiling)"
    )


def run_compare(args: argparse.Namespace) -> int:
    """Runs ``bnnjax compare`` from parsed flags.

    Args:
      args: the namespace of a parser given :func:`add_compare_arguments`.

    Returns:
      The exit status: 0 done, 1 failed (missing data, non-empty
      ``--out``), 2 invalid settings, 130 interrupted.
    """

    def fail(message: str, status: int) -> int:
        print(f"bnnjax compare: error: {message}", file=sys.stderr)
        return status

    methods = args.methods
    if args.model != "mlp" and args.hidden != train_lib.DEFAULT_HIDDEN:
        return fail(
            f"--hidden sets MLP widths; it does not apply to --model "
            f"{args.model}.",
            2,
        )
    out = args.out
    runs_file = None
    if out is not None:
        out = os.path.abspath(out)
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            return fail(
                f"--out {out!r} exists and is not an empty directory; "
                "choose a new one.",
                1,
            )

    def on_run(run: compare_lib.RunResult) -> None:
        if args.progress:
            print(_describe(run), file=sys.stderr, flush=True)
        if runs_file is not None:
            for record in run.records():
                runs_file.write(json.dumps(record) + "\n")
            runs_file.flush()

    try:
        if out is not None:
            os.makedirs(out, exist_ok=True)
            runs_file = open(  # noqa: SIM115 (closed below)
                os.path.join(out, "runs.jsonl"), "w", encoding="utf-8"
            )
        grids = None
        if args.lr_grid is not None:
            grids = {
                m.label: compare_lib.TuningGrid(
                    learning_rates=args.lr_grid,
                    options=compare_lib.tuning_grid(
                        m.name, **m.options
                    ).options,
                )
                for m in methods
            }
        result = compare_lib.compare(
            methods,
            dataset=args.dataset,
            model=args.model,
            hidden=args.hidden,
            binary_activations=args.binary_activations,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            schedule=args.schedule,
            real_learning_rate=args.real_lr,
            seeds=tuple(range(args.seeds)),
            tune=args.tune,
            tune_seeds=tuple(
                compare_lib.TUNE_SEED_OFFSET + i for i in range(args.tune_seeds)
            ),
            tune_epochs=args.tune_epochs,
            grids=grids,
            target_accuracy=args.target_accuracy,
            val_fraction=args.val_fraction,
            on_run=on_run,
        )
    except (ValueError, TypeError) as e:
        return fail(str(e), 2)
    except OSError as e:
        return fail(str(e), 1)
    except KeyboardInterrupt:
        print("bnnjax compare: interrupted.", file=sys.stderr)
        return 130
    finally:
        if runs_file is not None:
            runs_file.close()

    settings = result.settings
    context = {
        "dataset": settings["dataset"],
        "binary_activations": settings["binary_activations"],
        "device": settings["device"],
        "versions": settings["versions"],
    }
    lines = [{**m.to_dict(), **context} for m in result.methods]
    for line in lines:
        print(json.dumps(line))
    table = result.table()
    print(table, file=sys.stderr)
    if out is not None:
        with open(os.path.join(out, "runs.jsonl"), "r+", encoding="utf-8") as f:
            runs = f.read()
            f.seek(0)
            f.write(json.dumps({"kind": "settings", **settings}) + "\n" + runs)
        with open(
            os.path.join(out, "results.jsonl"), "w", encoding="utf-8"
        ) as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
        with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        result.plot(out)
    return 0
