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

The parser is built without importing JAX or the training code: a
command's flags are added only when that command is named, and its code is
imported only when it runs.

Exit status: 0 on success; 2 for invalid arguments (unknown names,
impossible values, a path that is not what the command reads, such as a
directory that is not a run or a dataset directory without the dataset's
files, a comparison whose estimated memory exceeds the machine's); 1 when
the run cannot proceed (a dataset that cannot be downloaded, a run
directory that is not empty, a corrupt checkpoint, a non-finite loss);
130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM). An
interrupted, terminated or killed ``train`` keeps its last complete
checkpoint; ``--resume`` continues from it to the same final parameters.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple, NoReturn

from bnnjax import _argtypes
from bnnjax._version import __version__


class _Parser(argparse.ArgumentParser):
    """An argument parser with one-line errors and no flag abbreviations.

    A bad value prints one line naming the flag, the value and what is
    accepted, and a pointer to the command's ``--help``, instead of the whole
    usage first. Long flags must be spelled in full: with argparse's prefix
    matching, a flag of another command (``compare --seed``) would silently
    mean one of this command's (``--seeds``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, _Parser] = {}  # filled by _build_parser

    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n"
        )


def _devices(text: str) -> int | None:
    return None if text == "all" else _argtypes.positive_int(text)


def _method(text: str) -> Any:
    """``NAME`` stays a string; ``NAME:OPTION=VALUE...`` a MethodSpec."""
    from bnnjax import _cli_compare

    try:
        spec = _cli_compare.parse_method(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec if spec.options else spec.name


def _method_table() -> str:
    from bnnjax import presets as presets_lib

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
            lines.append(f"  {name:<23} {_argtypes.format_options(options)}")
    return "\n".join(lines)


def _recipe_table() -> str:
    from bnnjax.training import recipes

    lines = ["recipes (--recipe NAME; flags given beside it override it):"]
    for recipe in recipes.RECIPES.values():
        lines.append(f"  {recipe.name:<23} {recipe.summary}")
    return "\n".join(lines)


def _add_train_arguments(
    parser: argparse.ArgumentParser, suppress: bool = False
) -> None:
    """Adds the train flags; ``suppress`` leaves unset flags out."""
    from bnnjax import train as train_lib
    from bnnjax.training import losses, optimization, recipes
    from bnnjax.training.augment import AUGMENT_NAMES
    from bnnjax.training.config import SELECT_NAMES

    d = train_lib.TrainConfig()
    parser.epilog = _method_table() + "\n" + _recipe_table()

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--recipe",
        choices=recipes.RECIPE_NAMES,
        default=default(None),
        metavar="NAME",
        help="start from a named recipe (listed below): its settings "
        "replace the defaults, and every flag given beside it overrides "
        "the recipe's value",
    )
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
        help=_argtypes.DATA_DIR_HELP,
    )
    parser.add_argument(
        "--model",
        choices=train_lib.MODEL_NAMES,
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
        choices=optimization.OPTIMIZER_NAMES,
        default=default(d.optimizer),
        help="base optimizer; sgd has momentum 0.9 (default: %(default)s)",
    )
    parser.add_argument(
        "--weight-decay",
        type=_argtypes.non_negative_float,
        default=default(d.weight_decay),
        metavar="X",
        help="weight decay of the real parameters (the latent binary "
        "weights have none): decoupled with adamw, an L2 gradient term "
        "with adam and sgd (default: 1e-4 with adamw, else 0)",
    )
    parser.add_argument(
        "--schedule",
        choices=optimization.SCHEDULE_NAMES,
        default=default(d.schedule),
        help="learning-rate schedule after the warm-up; exponential is "
        "BinaryNet's per-epoch decay (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=_argtypes.non_negative_int,
        default=default(d.warmup_epochs),
        metavar="N",
        help="epochs of linear learning-rate warm-up from 0 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--final-lr-fraction",
        type=_argtypes.non_negative_float,
        default=default(d.final_lr_fraction),
        metavar="X",
        help="the last learning rate as a fraction of the peak (default: 0 "
        "for cosine and linear, 3e-3 for exponential, 1 for constant)",
    )
    parser.add_argument(
        "--loss",
        choices=losses.LOSS_NAMES,
        default=default(d.loss),
        help="training loss; squared_hinge is BinaryNet's (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--dropout",
        type=_argtypes.non_negative_float,
        default=default(d.dropout),
        metavar="X",
        help="mlp: dropout rate on the real-valued hidden activations (and "
        "a real head's input), in [0, 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--input-dropout",
        type=_argtypes.non_negative_float,
        default=default(d.input_dropout),
        metavar="X",
        help="mlp: dropout rate on the input pixels, in [0, 1) (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--init-from",
        default=default(d.init_from),
        metavar="RUN_DIR",
        help="start from another run's parameters and batch statistics (its "
        "last checkpoint; same model and widths), with a fresh optimizer: "
        "the second stage of multi-stage training, e.g. fully binary from "
        "a binary-weights run",
    )
    parser.add_argument(
        "--teacher",
        default=default(d.teacher),
        metavar="RUN_DIR",
        help="distil from this run's network (its last checkpoint, e.g. a "
        "float run): loss = (1 - w) * label loss + w * T^2 KL(teacher || "
        "student) at temperature T",
    )
    parser.add_argument(
        "--distill-weight",
        type=_argtypes.non_negative_float,
        default=default(d.distill_weight),
        metavar="W",
        help="w above, in [0, 1]; 1 is ReActNet's distributional loss alone "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--distill-temperature",
        type=_argtypes.positive_float,
        default=default(d.distill_temperature),
        metavar="T",
        help="T above (default: %(default)s)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=_argtypes.non_negative_float,
        default=default(d.label_smoothing),
        metavar="X",
        help="label smoothing of the cross-entropy, in [0, 1) "
        "(default: %(default)s)",
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
        "--width",
        type=_argtypes.positive_float,
        default=default(d.width),
        metavar="X",
        help="width multiplier of cnn and the resnets: every width but the "
        "head's is scaled by X; mlp takes --hidden instead "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_NAMES,
        default=default(d.augment),
        help="augmentation of the training batches, on the device: "
        "crop_flip (random crop of the image zero-padded by 4 pixels, "
        "random horizontal flip), shift (random shift by up to 2 pixels, "
        "no flip) or none; evaluation never augments (default: none for "
        "mlp; for cnn and resnets crop_flip on CIFAR, shift on the MNIST "
        "family, none on other datasets)",
    )
    parser.add_argument(
        "--val-fraction",
        type=_argtypes.fraction,
        default=default(d.val_fraction),
        help="fraction of the training data held out for validation "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--select",
        choices=SELECT_NAMES,
        default=default(d.select),
        help="which parameters the run ends with (its test evaluation, "
        "export, predict, --init-from and --teacher use them): last, the "
        "last epoch's, or best_val, per seed those of the epoch with the "
        "best validation accuracy (default: %(default)s)",
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
        "--tensorboard",
        action="store_true",
        default=default(False),
        help="also write each epoch's metrics as TensorBoard event files "
        "in OUT/tensorboard (needs the tensorboard extra: pip install "
        "'bnnjax[tensorboard]')",
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


def _add_demo_arguments(
    parser: argparse.ArgumentParser, suppress: bool
) -> None:
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line instead"
    )


def _add_compare_arguments(
    parser: argparse.ArgumentParser, suppress: bool
) -> None:
    from bnnjax import _cli_compare

    _cli_compare.add_compare_arguments(parser)


def _add_export_arguments(
    parser: argparse.ArgumentParser, suppress: bool
) -> None:
    parser.add_argument("run_dir", help="a run directory of `bnnjax train`")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="file to write"
    )
    parser.add_argument(
        "--epoch",
        type=_argtypes.positive_int,
        default=None,
        help="which checkpoint (default: the latest)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="which seed of a multi-seed run (default: its first)",
    )
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare packed and float predictions on the run's test split "
        "(default: on)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace FILE if it exists (default: refuse)",
    )


def _add_predict_arguments(
    parser: argparse.ArgumentParser, suppress: bool
) -> None:
    parser.add_argument("file", help="a file written by `bnnjax export`")
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset spec as for train (default: the one the model was "
        "trained on, stored in the file)",
    )
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR", help=_argtypes.DATA_DIR_HELP
    )
    parser.add_argument(
        "--batch-size",
        type=_argtypes.positive_int,
        default=1000,
        help="examples per inference call (default: %(default)s)",
    )


def _add_summary_arguments(
    parser: argparse.ArgumentParser, suppress: bool
) -> None:
    from bnnjax._cli_tools import SUMMARY_INPUTS
    from bnnjax.presets import METHOD_NAMES
    from bnnjax.train import TrainConfig

    d = TrainConfig()
    parser.add_argument(
        "--model",
        choices=tuple(SUMMARY_INPUTS),
        default=d.model,
        help="architecture (default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        choices=METHOD_NAMES,
        default=d.method,
        help="training method (default: %(default)s)",
    )
    parser.add_argument(
        "--binary-activations",
        action=argparse.BooleanOptionalAction,
        default=d.binary_activations,
        help="binarize activations (default: as in train)",
    )
    parser.add_argument(
        "--hidden",
        type=_argtypes.widths,
        default=d.hidden,
        metavar="W[,W...]",
        help=f"MLP hidden widths (default: {','.join(map(str, d.hidden))})",
    )
    parser.add_argument(
        "--num-classes",
        type=_argtypes.positive_int,
        default=10,
        help="number of outputs (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line instead"
    )


class _Command(NamedTuple):
    help: str
    description: str | None
    formatter_class: type[argparse.HelpFormatter]
    add_arguments: Callable[[argparse.ArgumentParser, bool], None]


_COMMANDS = {
    "demo": _Command(
        help="demonstrate the binarizer and its surrogate gradients",
        description=(
            "Show the binarizer on a Gaussian weight (values per output "
            "channel, the scale), the slope of every surrogate at a few "
            "points, and the founding method's scale invariance: the "
            "gradient of weights scaled by c does not depend on c."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        add_arguments=_add_demo_arguments,
    ),
    "train": _Command(
        help="train a binary network; prints one JSON line of results",
        description=(
            "Train a binary network and print one JSON line of results on\n"
            "stdout (a progress bar goes to stderr). With no arguments: the\n"
            "founding method on an MLP with binary weights and real\n"
            "activations, on the MNIST sample shipped with bnnjax."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_arguments=_add_train_arguments,
    ),
    "compare": _Command(
        help="compare training methods on equal terms; one JSON line each",
        description=(
            "Train a grid of methods x seeds on one dataset and model under "
            "one budget; each method's learning rate (and its own "
            "hyperparameters) is chosen on the validation split; the test "
            "split is evaluated once per final run. Prints one JSON line "
            "per method (test_accuracy_mean, test_accuracy_std, ...)."
        ),
        formatter_class=argparse.HelpFormatter,
        add_arguments=_add_compare_arguments,
    ),
    "export": _Command(
        help="pack a trained run into a 1-bit model file",
        description=(
            "Pack a run's trained model (one seed, one checkpoint) into a "
            "single self-describing file: binary kernels at 1 bit, batch "
            "norm folded, checksummed (see bnnjax.export). Prints one JSON "
            "line with file_bytes and float32_bytes; with --verify (the "
            "default) also the float and packed models' test accuracy and "
            "how many predictions agree."
        ),
        formatter_class=argparse.HelpFormatter,
        add_arguments=_add_export_arguments,
    ),
    "predict": _Command(
        help="evaluate a packed model file on a dataset",
        description=(
            "Load a packed model file (verifying its checksum), run packed "
            "inference on a dataset's test split and print one JSON line "
            "with test_accuracy, file_bytes and the compression ratio "
            "against the float32 checkpoint."
        ),
        formatter_class=argparse.HelpFormatter,
        add_arguments=_add_predict_arguments,
    ),
    "summary": _Command(
        help="print the memory table of a model configuration",
        description=(
            "Print the per-tensor memory table of a model configuration: "
            "binary kernels at 1 bit deployed, everything else at its "
            "dtype; totals and the compression ratio against float32."
        ),
        formatter_class=argparse.HelpFormatter,
        add_arguments=_add_summary_arguments,
    ),
}


def _build_parser(
    *, suppress: bool = False, commands: Collection[str] | None = None
) -> _Parser:
    """The argument parser.

    Args:
      suppress: leave flags that are not given out of the parsed namespace
        (to tell which train flags were given explicitly).
      commands: the commands whose flags are added (default: all). The
        others keep their name and one-line help, so ``bnnjax --help``
        builds no flags that need the training code (and JAX) to describe.
    """
    parser = _Parser(
        prog="bnnjax",
        description="Binarized neural networks in JAX and Flax.",
    )
    parser.add_argument(
        "--version", action="version", version=f"bnnjax {__version__}"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in _COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description,
            formatter_class=command.formatter_class,
        )
        parser.commands[name] = sub
        if commands is None or name in commands:
            command.add_arguments(sub, suppress)
    return parser


def _command_in(argv: Sequence[str]) -> set[str]:
    """The command named in ``argv`` (its first non-option word), if any."""
    return next(({a} for a in argv if not a.startswith("-")), set())


# A flag of one command given to another: what this command calls it.
_OTHER_SPELLINGS = {
    ("compare", "--seed"): "compare takes --seeds N (seeds 0..N-1) or "
    "--seed-list S[,S...] (these seeds)",
    ("compare", "--method"): "compare takes --methods M[,M...]",
    ("compare", "--lr"): "compare tunes the learning rate; --lr-grid "
    "LR[,LR...] sets the values it searches",
    ("train", "--seeds"): "train takes --seed S[,S...]",
    ("train", "--seed-list"): "train takes --seed S[,S...]",
    ("train", "--methods"): "train takes one --method",
}


def _parse(parser: _Parser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args``, with unknown flags reported by their command.

    argparse reports flags no parser knows from the top-level parser; here
    the command's own parser names them, with a pointer to its ``--help``
    and, for another command's spelling (``compare --seed``), this
    command's.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        message = f"unrecognized arguments: {' '.join(extra)}"
        hints = [
            _OTHER_SPELLINGS[args.command, flag]
            for flag in dict.fromkeys(a.split("=", 1)[0] for a in extra)
            if (args.command, flag) in _OTHER_SPELLINGS
        ]
        parser.commands[args.command].error("; ".join([message, *hints]))
    return args


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
    selected = _command_in(argv)
    args = _parse(_build_parser(commands=selected), argv)
    # The commands' code (and JAX) is imported only once a command runs.
    if args.command == "train":
        from bnnjax import _cli_train

        explicit = vars(
            _parse(_build_parser(suppress=True, commands=selected), argv)
        )
        return _cli_train.run_train(args, explicit)
    if args.command == "compare":
        from bnnjax import _cli_compare

        return _cli_compare.run_compare(args)
    from bnnjax import _cli_tools

    run = {
        "demo": _cli_tools.run_demo,
        "summary": _cli_tools.run_summary,
        "export": _cli_tools.run_export,
        "predict": _cli_tools.run_predict,
    }[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
