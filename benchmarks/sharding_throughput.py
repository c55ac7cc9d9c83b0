"""Data-parallel training throughput against the number of devices.

Times bnnjax's jitted training step (:func:`bnnjax.train.make_train_step`)
on a one-axis data mesh (:func:`bnnjax.distributed.data_mesh`) of 1, 2, 4,
8 devices, with the same *global* batch split over them (strong scaling,
as ``bnnjax train`` does), against the plain step without a mesh on one
device (``variant: "plain"``). The model is ``bnnjax train``'s default:
the founding method on a 784-512-512-10 MLP with binary weights, one seed,
synthetic MNIST-shaped uint8 batches already on the devices.

On a CPU the devices are simulated (``jax_num_cpu_devices``, set here
before JAX starts): they share the same cores, so the numbers measure the
overhead of splitting the step (per-device dispatch, the gradient
all-reduce, smaller matrix products), not a speedup. Real scaling needs
real devices.

Repeats are interleaved (each repeat times every variant in turn, so a
change in machine load hits them all) and the median is reported. Every
line is JSON with the device, versions and XLA flags; ratios
(``ratio_to_plain``, throughput over the plain step's) are only
meaningful within one run.

Usage:
  python benchmarks/sharding_throughput.py [--devices 1,2,4,8]
      [--cpu-devices 8] [--batch 256] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _env


def _environment(jax) -> dict:
    return {
        **_env.environment((*_env.PACKAGES, "orbax-checkpoint")),
        "simulated_devices": jax.default_backend() == "cpu"
        and jax.device_count() > 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=8,
        help="simulated CPU devices (ignored by GPU and TPU backends)",
    )
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--steps", type=int, default=20, help="per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    import jax.numpy as jnp
    import numpy as np

    import bnnjax
    from bnnjax import distributed, train

    env = _environment(jax)
    config = train.TrainConfig(batch_size=args.batch)
    model = train.build_model(config, 10)
    sample = jnp.zeros((1, 28, 28, 1), jnp.float32)
    lr, real_lr = config.learning_rates()
    tx = config.preset.optimizer(
        train.abstract_params(model, sample),
        make_optimizer=config.make_optimizer,
        learning_rate=lr,
        real_learning_rate=real_lr,
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 1, args.batch, 28, 28, 1), np.uint8)
    labels = rng.integers(0, 10, (4, 1, args.batch)).astype(np.int32)

    def prepare(mesh):
        """State, compiled step and device-resident batches of a variant."""
        state = train.init_state(model, tx, (0,), sample, mesh=mesh)
        step = train.make_train_step(model, tx, mesh=mesh)
        if mesh is None:
            batches = [
                jax.device_put((x, y))
                for x, y in zip(images, labels, strict=True)
            ]
        else:
            sharding = distributed.batch_sharding(mesh, 1)
            batches = [
                (
                    distributed.global_batch(sharding, x, x.shape),
                    distributed.global_batch(sharding, y, y.shape),
                )
                for x, y in zip(images, labels, strict=True)
            ]
        for x, y in batches:  # compile and warm up
            state, _ = step(state, x, y, progress)
        jax.block_until_ready(state)
        return {"state": state, "step": step, "batches": batches}

    def timed(variant):
        """Seconds per step over ``--steps`` steps."""
        state, step, batches = (
            variant["state"],
            variant["step"],
            variant["batches"],
        )
        start = time.perf_counter()
        for i in range(args.steps):
            x, y = batches[i % len(batches)]
            state, _ = step(state, x, y, progress)
        jax.block_until_ready(state)
        variant["state"] = state
        return (time.perf_counter() - start) / args.steps

    progress = np.float32(0.5)
    variants = {("plain", 1): prepare(None)}
    for n in (int(d) for d in args.devices.split(",")):
        if n > jax.device_count():
            print(
                json.dumps(
                    {
                        "benchmark": "sharding_train_step",
                        "devices": n,
                        "skipped": f"only {jax.device_count()} devices",
                        **env,
                    }
                )
            )
            continue
        bnnjax.train.check_batch_split(args.batch, n)
        variants[("mesh", n)] = prepare(distributed.data_mesh(n))
    # Interleaved repeats: a change in machine load hits every variant.
    times = {key: [] for key in variants}
    for _ in range(args.repeats):
        for key, variant in variants.items():
            times[key].append(timed(variant))
    plain = statistics.median(times[("plain", 1)])
    rows = [(v, n, statistics.median(t)) for (v, n), t in times.items()]
    for variant, n, seconds in rows:
        print(
            json.dumps(
                {
                    "benchmark": "sharding_train_step",
                    "variant": variant,
                    "devices": n,
                    "global_batch": args.batch,
                    "per_device_batch": args.batch // n,
                    "model": "mlp 784-512-512-10, scaled_sigmoid, 1 seed",
                    "ms_per_step": round(seconds * 1e3, 3),
                    "examples_per_second": round(args.batch / seconds, 1),
                    "ratio_to_plain": round(plain / seconds, 4),
                    "steps": args.steps,
                    "repeats": args.repeats,
                    **env,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
