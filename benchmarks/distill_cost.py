"""The cost of distillation: the training step with and without a teacher.

``bnnjax train --teacher RUN_DIR`` runs the teacher's forward pass (in
evaluation mode, no gradient) inside every jitted training step. This
script times the student's step alone and with a float teacher of each
size, in one process and interleaved rounds, on MNIST-shaped ``uint8``
batches (the step scales them to ``[0, 1]``):

* student: ``BinaryMLP`` with the founding method, ``--hidden`` widths,
  binary weights and (``--binary-activations``) activations, Adam, batch
  ``--batch-size``, one seed;
* teachers: float ``BinaryMLP`` (``method="float"``) of each
  ``--teacher-hidden`` entry, distillation weight 1 (ReActNet's loss).

Each line: ``variant`` (``student`` or ``teacher_<widths>``), the median
step time over every timed step of every round, ``examples_per_second``
and ``step_ratio``, the step time over the student's own (the teacher's
cost as a factor; 1.0 is free), plus the environment block.

Usage:
  python benchmarks/distill_cost.py [--hidden 1024,1024,1024]
      [--binary-activations] [--teacher-hidden 1024,1024,1024 ...]
      [--batch-size 100] [--steps 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import _env
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import train
from bnnjax.training import step as step_lib


def _widths(text: str) -> tuple[int, ...]:
    return tuple(int(w) for w in text.split(","))


def _time(
    step, state, images, labels, steps: int
) -> tuple[list[float], object]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, images, labels, np.float32(0.5))
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    return times, state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=_widths, default=(1024, 1024, 1024))
    parser.add_argument("--binary-activations", action="store_true")
    parser.add_argument(
        "--teacher-hidden",
        type=_widths,
        action="append",
        default=None,
        help="a teacher's widths; repeat for several (default: the "
        "student's widths, and twice them)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    teachers = args.teacher_hidden or [
        args.hidden,
        tuple(2 * w for w in args.hidden),
    ]
    env = _env.environment()
    config = train.TrainConfig(
        hidden=args.hidden, binary_activations=args.binary_activations
    )
    rng = np.random.default_rng(0)
    images = jnp.asarray(
        rng.integers(0, 256, (1, args.batch_size, 28, 28, 1), np.uint8)
    )
    labels = jnp.asarray(rng.integers(0, 10, (1, args.batch_size)), jnp.int32)
    sample = jnp.zeros((1, 28, 28, 1))
    model, tx, _, _ = step_lib.build_training(config, sample, 10, 100)
    state = step_lib.init_state(model, tx, [0], sample)
    steps = {"student": step_lib.make_train_step(model, tx)}
    for widths in teachers:
        teacher_model = train.TrainConfig(
            method="float", hidden=widths
        ).make_model(10)
        variables = teacher_model.init(jax.random.key(1), sample, train=False)
        teacher = step_lib.Teacher(
            teacher_model, jax.tree.map(lambda a: a[None], dict(variables))
        )
        name = "teacher_" + "x".join(map(str, widths))
        steps[name] = step_lib.make_train_step(model, tx, teacher=teacher)
    times: dict[str, list[float]] = {name: [] for name in steps}
    # One state per variant: on accelerators the step donates its input.
    states = {name: jax.tree.map(jnp.copy, state) for name in steps}
    for name, step in steps.items():  # compile and warm up
        _, states[name] = _time(step, states[name], images, labels, args.warmup)
    for _ in range(args.rounds):
        for name, step in steps.items():
            timed, states[name] = _time(
                step, states[name], images, labels, args.steps
            )
            times[name].extend(timed)
    base = statistics.median(times["student"])
    for name, timed in times.items():
        median = statistics.median(timed)
        line = {
            "benchmark": "distill_cost",
            "variant": name,
            "student_hidden": list(args.hidden),
            "binary_activations": args.binary_activations,
            "batch_size": args.batch_size,
            "median_step_ms": round(median * 1e3, 3),
            "examples_per_second": round(args.batch_size / median, 1),
            "step_ratio": round(median / base, 3),
            "steps": len(timed),
            **env,
            "load": _env.load(),
        }
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
