"""The ``bnnjax compare`` subcommand: flags and the run.

:func:`add_compare_arguments` adds the flags to an ``argparse`` parser
(``bnnjax.cli`` gives it the ``compare`` subparser) and
:func:`run_compare` runs :func:`bnnjax.compare.compare` from the parsed
flags. stdout gets one JSON line per method (``method``,
``test_accuracy_mean``, ``test_accuracy_std``, ... with the device and
versions); stderr gets, before the first run, how many runs the comparison
will make and its estimated memory, then a line per finished run with an
estimate of the time left, and the Markdown table. With ``--out DIR`` the
directory receives ``runs.jsonl`` (the settings, then every run per seed,
appended as runs finish), ``results.jsonl`` (one line per method),
``table.md`` and the plots.

Exit status: 0 on success; 2 for invalid settings (an unknown method or
option, an impossible value, a dataset path without the dataset, an
``--out`` that cannot be created, an estimated memory above the memory
available without ``--allow-large``); 1 when the comparison cannot
proceed (a dataset that cannot be downloaded, a non-empty ``--out``); 130
when interrupted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from bnnjax import _argtypes
from bnnjax import compare as compare_lib
from bnnjax import data as data_lib
from bnnjax import presets as presets_lib
from bnnjax import train as train_lib
from bnnjax.training.augment import AUGMENT_NAMES

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
            + _argtypes.format_options(presets_lib.method_options(name))
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
        "--data-dir", default=None, metavar="DIR", help=_argtypes.DATA_DIR_HELP
    )
    parser.add_argument(
        "--model",
        choices=train_lib.MODEL_NAMES,
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
        "--width",
        type=_argtypes.positive_float,
        default=d.width,
        metavar="X",
        help="width multiplier of cnn and the resnets, as for train "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_NAMES,
        default=d.augment,
        help="augmentation of the training batches, as for train; every "
        "method sees the same draws (default: none for mlp; for cnn and "
        "resnets crop_flip on CIFAR, shift on the MNIST family)",
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
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        type=_argtypes.positive_int,
        default=3,
        metavar="N",
        help="final runs use seeds 0..N-1, trained together "
        "(default: %(default)s)",
    )
    seeds.add_argument(
        "--seed-list",
        type=_argtypes.seed_list,
        default=None,
        metavar="S[,S...]",
        help="final runs use these seeds, trained together, e.g. 3,4,5 "
        "(instead of --seeds)",
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
        "--allow-large",
        action="store_true",
        help="run even when the estimated memory of the largest run (its "
        "seeds are trained together) exceeds the memory available "
        "(default: refuse, exit 2)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report the planned runs, then each finished run and the time "
        "left, on stderr (default: on)",
    )


def _describe(run: compare_lib.RunResult) -> str:
    options = (
        " " + _argtypes.format_options(run.options, sep=" ")
        if run.options
        else ""
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


def _seeds_text(seeds: Sequence[int]) -> str:
    """``0,1,2``; a long run of consecutive seeds as ``0..99``."""
    seeds = list(seeds)
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}..{seeds[-1]}"
    if len(seeds) > 8:
        return ",".join(map(str, seeds[:6])) + f",... ({len(seeds)} seeds)"
    return ",".join(map(str, seeds))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_plan(plan: compare_lib.Plan) -> str:
    """One line: how many runs, in which phases, and the memory estimate."""
    size = _argtypes.format_bytes
    phases = []
    tuning = [r for r in plan.runs if r.phase == "tune"]
    if tuning:
        per_method = collections.Counter(r.method for r in tuning)
        low, high = min(per_method.values()), max(per_method.values())
        seeds = tuning[0].seeds
        phases.append(
            f"{_plural(len(tuning), 'tuning run')} on the validation split "
            f"({_plural(len(per_method), 'method')} x "
            f"{low if low == high else f'{low} to {high}'} candidates x "
            f"{_plural(len(seeds), 'seed')} ({_seeds_text(seeds)}), "
            f"{_plural(tuning[0].epochs, 'epoch')} each)"
        )
    final = [r for r in plan.runs if r.phase == "final"]
    seeds = final[0].seeds
    phases.append(
        f"{_plural(len(final), 'final run')} ({_plural(len(seeds), 'seed')} "
        f"trained together: {_seeds_text(seeds)}; "
        f"{_plural(final[0].epochs, 'epoch')} each)"
    )
    memory = f"estimated memory {size(plan.memory_bytes)}"
    if plan.available_bytes is not None:
        memory += (
            f" of {size(plan.available_bytes)} available ({plan.memory_source})"
        )
    return (
        f"bnnjax compare: {_plural(len(plan.runs), 'run')}, one after "
        f"another: {', then '.join(phases)}; {memory}."
    )


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 5 min``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class _Progress:
    """The plan, then each finished run with the time left, on stderr.

    The time left assumes each remaining run costs the mean overhead of
    the runs so far (wall clock less training steps: compiling,
    evaluating) plus their training seconds per seed and epoch times its
    seeds and epochs.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.plan: compare_lib.Plan | None = None
        self.started = 0.0
        # Per finished run: (overhead s, training s, seeds x epochs).
        self.done: list[tuple[float, float, int]] = []

    def print(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def start(self, plan: compare_lib.Plan) -> None:
        self.plan = plan
        self.print(describe_plan(plan))
        self.started = time.monotonic()

    def finished(self, run: compare_lib.RunResult) -> None:
        now = time.monotonic()
        wall, self.started = now - self.started, now
        training = sum(run.epoch_seconds)
        self.done.append(
            (max(wall - training, 0.0), training, len(run.seeds) * run.epochs)
        )
        plan = self.plan
        text = _describe(run)
        if plan is not None:
            n, total = len(self.done), len(plan.runs)
            text += f"; run {n} of {total}"
            if n < total:
                left = self.seconds_left(plan.runs[n:])
                text += f", about {_duration(left)} left"
        self.print(text)

    def seconds_left(self, runs: Sequence[compare_lib.PlannedRun]) -> float:
        """Estimated seconds of ``runs``, from the runs done so far."""
        overhead = sum(o for o, _, _ in self.done) / len(self.done)
        per_unit = sum(t for _, t, _ in self.done) / sum(
            u for _, _, u in self.done
        )
        return sum(overhead + per_unit * len(r.seeds) * r.epochs for r in runs)


class _OutError(Exception):
    """``--out`` cannot be created or written; the message says why."""


def _open_out(out: str) -> IO[str]:
    """Creates ``out`` and opens its ``runs.jsonl``; raises _OutError."""
    try:
        os.makedirs(out, exist_ok=True)
        return open(os.path.join(out, "runs.jsonl"), "w", encoding="utf-8")
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
        raise _OutError(
            f"cannot create --out {out}: {reason}; choose another --out."
        ) from None


def _memory_message(plan: compare_lib.Plan) -> str:
    size = _argtypes.format_bytes
    seeds = max(len(r.seeds) for r in plan.runs)
    return (
        f"the largest run needs about {size(plan.memory_bytes)} (estimated: "
        f"{seeds} seeds trained together x {size(plan.memory_per_seed)} "
        f"each), more than the {size(plan.available_bytes or 0)} available "
        f"({plan.memory_source}); use fewer seeds (--seeds, --seed-list), or "
        "pass --allow-large to run anyway."
    )


def _write_results(
    out: str, settings: dict[str, Any], lines: list[dict[str, Any]], table: str
) -> None:
    with open(os.path.join(out, "runs.jsonl"), "r+", encoding="utf-8") as f:
        runs = f.read()
        f.seek(0)
        f.write(json.dumps({"kind": "settings", **settings}) + "\n" + runs)
    with open(os.path.join(out, "results.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")


def run_compare(args: argparse.Namespace) -> int:
    """Runs ``bnnjax compare`` from parsed flags.

    Args:
      args: the namespace of a parser given :func:`add_compare_arguments`.

    Returns:
      The exit status: 0 done, 1 failed (a dataset that cannot be
      downloaded, a non-empty ``--out``), 2 invalid settings (including a
      dataset path without the dataset and an estimated memory above the
      memory available without ``--allow-large``), 130 interrupted.
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
    if out is not None:
        out = os.path.abspath(out)
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            return fail(
                f"--out {out!r} exists and is not an empty directory; "
                "choose a new one.",
                1,
            )
    progress = _Progress(args.progress)
    runs_file: IO[str] | None = None

    def on_start(plan: compare_lib.Plan) -> None:
        nonlocal runs_file
        if out is not None:
            runs_file = _open_out(out)
        progress.start(plan)

    def on_run(run: compare_lib.RunResult) -> None:
        progress.finished(run)
        if runs_file is not None:
            for record in run.records():
                runs_file.write(json.dumps(record) + "\n")
            runs_file.flush()

    seeds = (
        args.seed_list
        if args.seed_list is not None
        else tuple(range(args.seeds))
    )
    try:
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
            data_dir=args.data_dir,
            model=args.model,
            hidden=args.hidden,
            width=args.width,
            augment=args.augment,
            binary_activations=args.binary_activations,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            schedule=args.schedule,
            real_learning_rate=args.real_lr,
            seeds=seeds,
            tune=args.tune,
            tune_seeds=tuple(
                compare_lib.TUNE_SEED_OFFSET + i for i in range(args.tune_seeds)
            ),
            tune_epochs=args.tune_epochs,
            grids=grids,
            target_accuracy=args.target_accuracy,
            val_fraction=args.val_fraction,
            on_run=on_run,
            on_start=on_start,
            allow_large=args.allow_large,
        )
    except compare_lib.MemoryEstimateError as e:
        return fail(_memory_message(e.plan), 2)
    except (_OutError, data_lib.DatasetPathError) as e:
        return fail(str(e), 2)
    except (ValueError, TypeError) as e:
        return fail(str(e), 2)
    except (OSError, ImportError, data_lib.DatasetUnavailableError) as e:
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
        try:
            _write_results(out, settings, lines, table)
            result.plot(out)
        except OSError as e:
            reason = (e.strerror or type(e).__name__).lower()
            return fail(f"cannot write the results in {out}: {reason}.", 1)
    return 0
