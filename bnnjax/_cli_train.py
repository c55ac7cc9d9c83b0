"""The ``train`` command of the CLI: flags to a config, progress, signals.

:func:`run_train` builds the :class:`~bnnjax.train.TrainConfig` from the
flags (or, resuming, from the run's saved settings), shows a progress bar on
stderr, turns SIGINT and SIGTERM into a stop at the next step boundary,
writes TensorBoard event files with ``--tensorboard``, and prints one JSON
line of results.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

import numpy as np

from bnnjax import checkpoint as checkpoint_lib
from bnnjax import compare as compare_lib
from bnnjax import data as data_lib
from bnnjax import distributed
from bnnjax import train as train_lib
from bnnjax.training import recipes, sources, tensorboard

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
    "weight_decay": "weight_decay",
    "warmup_epochs": "warmup_epochs",
    "final_lr_fraction": "final_lr_fraction",
    "loss": "loss",
    "label_smoothing": "label_smoothing",
    "dropout": "dropout",
    "input_dropout": "input_dropout",
    "init_from": "init_from",
    "teacher": "teacher",
    "distill_weight": "distill_weight",
    "distill_temperature": "distill_temperature",
    "seed": "seeds",
    "hidden": "hidden",
    "width": "width",
    "val_fraction": "val_fraction",
    "select": "select",
    "augment": "augment",
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
    if args.resume and "recipe" in explicit:
        raise ValueError(
            "--recipe starts a new run; --resume continues one with its "
            "saved settings (which already hold its recipe's). Give one "
            "of them."
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
    elif args.recipe is not None:
        values = dict(recipes.get_recipe(args.recipe).settings)
        flags = explicit
    else:
        flags = vars(args)
    for flag, field in _FLAG_TO_FIELD.items():
        if flag in flags:
            values[field] = flags[flag]
    method = values.get("method")
    if isinstance(method, compare_lib.MethodSpec):
        values["method"] = method.name
        values["method_options"] = dict(method.options)
    elif "method" in flags:
        values["method_options"] = None
    if values.get("seeds") is None:
        values.pop("seeds", None)
    elif "seed" in flags:  # --seed 0,1 --seed 2: a list of lists
        values["seeds"] = tuple(s for group in flags["seed"] for s in group)
    model = values.get("model", "mlp")
    if "hidden" in explicit and model != "mlp":
        raise ValueError(
            f"--hidden sets MLP widths; it does not apply to --model {model}."
        )
    values["out_dir"] = args.out or train_lib.default_out_dir()
    for field, flag in (("init_from", "--init-from"), ("teacher", "--teacher")):
        if field in flags and values.get(field) is not None:
            path = sources.check_run_dir(values[field], flag)
            if path == os.path.abspath(values["out_dir"]):
                raise ValueError(
                    f"{flag} {path} is this run's --out; name another run."
                )
            values[field] = path
    return train_lib.TrainConfig.from_dict(values)


class _Progress:
    """Progress of :func:`bnnjax.train.run` on stderr, from its callbacks.

    On a terminal: a tqdm bar, with one line per epoch above it. Elsewhere
    (stderr redirected to a file or a pipe): only the line per epoch, so a
    log holds no bar frames.
    """

    def __init__(
        self, enabled: bool, desc: str, *, terminal: bool | None = None
    ):
        self._enabled = enabled
        self._desc = desc
        self._terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar: Any = None  # a tqdm bar, created on the first step

    def on_step(self, info: train_lib.StepInfo) -> None:
        if not self._enabled or not self._terminal:
            return
        if self._bar is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # no bar without tqdm
                self._terminal = False
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
        if not self._enabled:
            return
        val = np.mean([r["val_accuracy"] for r in records])
        flips = np.mean([r["flip_ratio"] for r in records])
        line = (
            f"epoch {epoch}: train loss "
            f"{np.mean([r['train_loss'] for r in records]):.4f}, val "
            f"accuracy {val:.4f}, flip ratio {flips:.2e}"
        )
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

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


def _disk_full_message(error: OSError, out_dir: str | None) -> str:
    """What a full disk means for the run in ``out_dir``: one line."""
    if out_dir and os.path.isfile(
        os.path.join(out_dir, checkpoint_lib.CONFIG_FILE)
    ):
        then = f"continue with `bnnjax train --resume --out {out_dir}`"
    else:
        then = "run the same command again"
    return f"{error} Free space on that disk, then {then}."


def run_train(args: argparse.Namespace, explicit: dict[str, Any]) -> int:
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
    if args.tensorboard:
        try:
            tensorboard.check_installed()
        except ModuleNotFoundError as e:
            return fail(str(e), 2)
    primary = distributed.is_primary()
    writer: tensorboard.TensorBoardWriter | None = None
    progress = _Progress(
        args.progress and primary, f"{config.method} {config.model}"
    )
    stop = _StopOnSignal()

    def on_step(info: train_lib.StepInfo) -> None:
        progress.on_step(info)
        stop.check()

    def on_epoch(epoch: int, records: list[dict[str, Any]]) -> None:
        progress.on_epoch(epoch, records)
        if writer is not None:
            writer.write_epoch(epoch, records)
        stop.check()

    def on_start(start_epoch: int) -> None:
        nonlocal writer
        if args.tensorboard and primary and config.out_dir:
            writer = tensorboard.TensorBoardWriter(
                os.path.join(config.out_dir, tensorboard.LOG_DIR_NAME),
                start_epoch=start_epoch,
            )
        if args.resume and primary:
            print(
                f"bnnjax train: resuming {config.out_dir} from epoch "
                f"{start_epoch} of {config.epochs}",
                file=sys.stderr,
                flush=True,
            )

    stop.install()
    try:
        results = train_lib.run(
            config,
            resume=args.resume,
            on_step=on_step,
            on_epoch=on_epoch,
            on_start=on_start,
        )
    except checkpoint_lib.RunDirectoryError as e:
        progress.close()
        return fail(f"{e} Choose another --out.", 2)
    except checkpoint_lib.DiskFullError as e:
        progress.close()
        return fail(_disk_full_message(e, config.out_dir), 1)
    except (
        data_lib.DatasetPathError,
        data_lib.DatasetSpecError,
        sources.SourceRunError,
    ) as e:
        progress.close()
        return fail(str(e), 2)
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
        if writer is not None:
            writer.close()
    progress.close()
    if primary:
        print(json.dumps(results))
    return 0
