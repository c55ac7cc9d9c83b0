"""Tests for bnnjax.distributed and data-parallel training.

JAX fixes its device count when its backend starts, so the many-device
checks run in subprocesses: one with 8 simulated CPU devices
(``--xla_force_host_platform_device_count=8``), and a two-process job on
localhost (``jax.distributed`` with a coordinator on 127.0.0.1, gloo
collectives, 2 CPU devices per process). The reference runs, on the one
device of this process, are the same global batches.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import jax
import numpy as np
from absl.testing import absltest

from bnnjax import checkpoint as ckpt
from bnnjax import distributed, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny run on the embedded MNIST sample with two seeds: a global batch of
# 400 splits over 1, 2, 4 and 8 devices.
TINY = dict(hidden=(16,), epochs=2, batch_size=400, seeds=(0, 1))

_PRELUDE = r"""
import json, os, sys
import jax
import numpy as np
jax.config.update("jax_numpy_rank_promotion", "raise")
from bnnjax import distributed, train
TINY = dict(hidden=(16,), epochs=2, batch_size=400, seeds=(0, 1))
"""

# Batch norm and the train step on 8 simulated devices; prints one JSON
# line of results.
_EIGHT_DEVICES_STEP = (
    _PRELUDE
    + r"""
import flax.linen as nn
import jax.numpy as jnp
from bnnjax import data
result = {"device_count": jax.device_count()}
mesh = distributed.data_mesh()

# Batch norm over a batch split in 8: shard i holds the value 10 i.
x = np.repeat(10.0 * np.arange(8, dtype=np.float32), 4)[:, None]
x = x + np.arange(3, dtype=np.float32)
xs = distributed.global_batch(distributed.batch_sharding(mesh), x, x.shape)
bn = nn.BatchNorm(use_running_average=False, momentum=0.0, epsilon=0.0)
variables = bn.init(jax.random.key(0), x)

@jax.jit
def normalize(v, x):
    y, updates = bn.apply(v, x, mutable=["batch_stats"])
    return y, updates["batch_stats"]

y, stats = normalize(variables, xs)
result["bn_shards"] = len(xs.addressable_shards)
result["bn_shard_rows"] = [s.data.shape[0] for s in xs.addressable_shards]
result["bn_mean"] = np.asarray(stats["mean"]).tolist()
result["bn_var"] = np.asarray(stats["var"]).tolist()
result["bn_y_error"] = float(
    np.max(np.abs(np.asarray(y) - (x - x.mean(0)) / x.std(0)))
)

# One jitted step, 8 devices against none, seeds and data axes together.
config = train.TrainConfig(hidden=(16,), seeds=(0, 1))
model = train.build_model(config, 10)
sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
lr, real_lr = config.learning_rates()
tx = config.preset.optimizer(
    train.abstract_params(model, sample),
    make_optimizer=config.make_optimizer,
    learning_rate=lr,
    real_learning_rate=real_lr,
)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (64, 8, 8, 1), np.uint8)
labels = rng.integers(0, 10, 64).astype(np.int32)
finals = []
for m in (None, mesh):
    state = train.init_state(model, tx, (0, 1), sample, mesh=m)
    step = train.make_train_step(model, tx, mesh=m)
    for epoch in range(2):
        for xb, yb in data.iterate_batches(
            images, labels, batch_size=16, seed=[0, 1], epoch=epoch
        ):
            state, metrics = step(state, xb, yb, np.float32(0.5))
    finals.append(jax.tree.leaves(state))
result["step_cache_size"] = step._cache_size()
result["step_sharding"] = list(finals[1][0].sharding.spec)
result["step_sharding_devices"] = len(finals[1][0].sharding.device_set)
result["step_max_error"] = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(*finals, strict=True)
)
result["metrics_shape"] = list(metrics["loss"].shape)
print("RESULT " + json.dumps(result))
"""
)

# train.run on 8 simulated devices; prints one JSON line of results.
_EIGHT_DEVICES_RUN = (
    _PRELUDE
    + r"""
out = sys.argv[1]
result = {"device_count": jax.device_count()}

# A run on 8 devices stopped after one epoch, resumed on 4.
cut = os.path.join(out, "cut")

def stop(epoch, records):
    raise KeyboardInterrupt

try:
    train.run(
        train.TrainConfig(**TINY, devices=8, out_dir=cut),
        on_epoch=stop,
        make_plots=False,
    )
except KeyboardInterrupt:
    pass
with open(os.path.join(cut, "config.json")) as f:
    saved_devices = json.load(f)["devices"]
second = train.run(
    train.TrainConfig(**TINY, devices=4, out_dir=cut),
    resume=True,
    make_plots=False,
)
result["run_devices"] = [saved_devices, second["devices"]]
result["resumed_from_epoch"] = second["resumed_from_epoch"]
result["test_accuracy_per_seed"] = second["test_accuracy_per_seed"]
try:
    train.run(train.TrainConfig(**TINY, devices=10, out_dir=os.path.join(out, "x")))
except ValueError as e:
    result["too_many"] = str(e)
result["too_many_dir_exists"] = os.path.exists(os.path.join(out, "x"))
try:
    train.run(train.TrainConfig(**{**TINY, "batch_size": 100}, devices=8, out_dir=os.path.join(out, "y")))
except ValueError as e:
    result["indivisible"] = str(e)
print("RESULT " + json.dumps(result))
"""
)

# One process of a two-process job; prints one JSON line of results.
_TWO_PROCESSES = (
    _PRELUDE
    + r"""
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
address = f"127.0.0.1:{port}"
first = distributed.initialize(address, 2, process_id)
again = distributed.initialize(address, 2, process_id)
try:
    distributed.initialize(address, 2, 1 - process_id)
    mismatch = None
except ValueError as e:
    mismatch = str(e)
mesh = distributed.data_mesh()
rows = distributed.host_rows(distributed.batch_sharding(mesh, 1), (2, 200), 1)
results = train.run(train.TrainConfig(**TINY, out_dir=out))
print("RESULT " + json.dumps({
    "initialized": [first, again],
    "mismatch": mismatch,
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "local_devices": jax.local_device_count(),
    "rows": [rows.start, rows.stop],
    "results": results,
}))
"""
)


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for name in (
        distributed.COORDINATOR_ENV,
        distributed.NUM_PROCESSES_ENV,
        distributed.PROCESS_ID_ENV,
    ):
        env.pop(name, None)
    return env


def _result(stdout, stderr, returncode):
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if returncode != 0 or len(lines) != 1:
        raise AssertionError(
            f"subprocess failed (exit {returncode}):\n{stdout[-3000:]}\n"
            f"{stderr[-3000:]}"
        )
    return json.loads(lines[0][len("RESULT ") :])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_same_params(test, want, got):
    for a, b in zip(_leaves(want), _leaves(got), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
    test.assertGreater(len(_leaves(want)), 10)


class _Reference:
    """The tiny run on this process's one device, computed once."""

    _tmp = None
    _dir = None

    @classmethod
    def directory(cls):
        if cls._dir is None:
            cls._tmp = tempfile.mkdtemp()
            cls._dir = os.path.join(cls._tmp, "reference")
            train.run(
                train.TrainConfig(**TINY, devices=1, out_dir=cls._dir),
                make_plots=False,
            )
        return cls._dir


def tearDownModule():
    if _Reference._tmp is not None:
        shutil.rmtree(_Reference._tmp, ignore_errors=True)


class InitializeTest(absltest.TestCase):
    def test_nothing_set_is_a_single_process(self):
        self.assertFalse(distributed.initialize(environ={}))
        self.assertFalse(jax.distributed.is_initialized())

    def test_invalid_settings_raise_before_jax_is_touched(self):
        cases = [
            (dict(num_processes=2, process_id=0), "need a coordinator"),
            (dict(environ={"JAX_PROCESS_ID": "1"}), "need a coordinator"),
            (
                dict(environ={"JAX_NUM_PROCESSES": "two"}),
                r"JAX_NUM_PROCESSES='two'; expected an integer",
            ),
            (dict(coordinator_address="localhost"), "'host:port'"),
            (dict(num_processes=0), r"num_processes=0; expected an int >= 1"),
            (dict(num_processes=True), "num_processes=True"),
            (dict(process_id=-1), r"process_id=-1"),
            (
                dict(coordinator_address="h:1", num_processes=2, process_id=2),
                r"expected 0 <= process_id < 2",
            ),
        ]
        for kwargs, regex in cases:
            kwargs = {"environ": {}, **kwargs}
            with (
                self.subTest(kwargs=kwargs),
                self.assertRaisesRegex(ValueError, regex),
            ):
                distributed.initialize(**kwargs)
        self.assertFalse(jax.distributed.is_initialized())


class MeshTest(absltest.TestCase):
    def test_mesh_and_shardings_on_one_device(self):
        mesh = distributed.data_mesh()
        self.assertEqual(mesh.axis_names, (distributed.DATA_AXIS,))
        self.assertEqual(mesh.size, jax.device_count())
        self.assertEqual(distributed.data_mesh(1).size, 1)
        batch = distributed.batch_sharding(mesh, 1)
        self.assertEqual(tuple(batch.spec), (None, "data"))
        self.assertEqual(tuple(distributed.replicated(mesh).spec), ())
        self.assertEqual(
            distributed.host_rows(batch, (2, 6, 3), 1), slice(0, 6)
        )
        x = np.arange(12.0).reshape(2, 6)
        y = distributed.global_batch(batch, x, x.shape)
        np.testing.assert_array_equal(np.asarray(y), x)
        self.assertEqual(y.sharding, batch)
        with self.assertRaisesRegex(ValueError, r"shape \(2, 3\).*\(2, 6\)"):
            distributed.global_batch(batch, x[:, :3], x.shape)
        self.assertTrue(distributed.is_primary())
        distributed.barrier("single process: returns at once")

    def test_bad_device_counts(self):
        n = jax.device_count()
        with self.assertRaisesRegex(
            ValueError, rf"devices={n + 1}, but only {n} cpu device"
        ):
            distributed.data_mesh(n + 1)
        for bad in (0, -1, True, 1.0):
            with self.assertRaisesRegex(ValueError, "expected a positive int"):
                distributed.data_mesh(bad)
        with self.assertRaisesRegex(ValueError, "batch_axis=-1"):
            distributed.batch_sharding(distributed.data_mesh(), -1)


class ConfigTest(absltest.TestCase):
    def test_devices_field(self):
        self.assertIsNone(train.TrainConfig().devices)
        self.assertEqual(train.TrainConfig(devices=4).devices, 4)
        with self.assertRaisesRegex(
            ValueError,
            r"TrainConfig.batch_size=100 does not split evenly over 8 "
            r"devices; accepted: a batch size that is a multiple of 8 "
            r"\(e.g. 96 or 104\), or a device count that divides 100 "
            r"\(1, 2, 4, 5, 10, ...\)",
        ):
            train.TrainConfig(devices=8)
        for bad in (0, True, 2.0):
            with self.assertRaisesRegex(ValueError, f"devices={bad!r}"):
                train.TrainConfig(devices=bad)
        config = train.TrainConfig(devices=2)
        self.assertEqual(train.TrainConfig.from_dict(config.to_dict()), config)
        old = config.to_dict()
        del old["devices"]  # config.json written before the field existed
        self.assertIsNone(train.TrainConfig.from_dict(old).devices)

    def test_run_refuses_more_devices_than_present(self):
        out = os.path.join(tempfile.mkdtemp(), "run")
        self.addCleanup(shutil.rmtree, os.path.dirname(out))
        n = jax.device_count()
        with self.assertRaisesRegex(ValueError, rf"only {n} cpu device"):
            train.run(train.TrainConfig(**TINY, devices=n + 1, out_dir=out))
        self.assertFalse(os.path.exists(out))


def _run_eight_devices(script, *args):
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    result = _result(proc.stdout, proc.stderr, proc.returncode)
    assert result["device_count"] == 8, result
    return result


class EightDevicesTest(absltest.TestCase):
    def test_batch_norm_and_step_on_eight_devices_equal_one(self):
        r = _run_eight_devices(_EIGHT_DEVICES_STEP)

        # Batch norm: statistics of the global batch, not of a shard.
        self.assertEqual(r["bn_shards"], 8)
        self.assertEqual(r["bn_shard_rows"], [4] * 8)
        np.testing.assert_allclose(r["bn_mean"], [35, 36, 37], rtol=1e-6)
        np.testing.assert_allclose(r["bn_var"], [525] * 3, rtol=1e-5)
        self.assertLess(r["bn_y_error"], 1e-5)

        # The jitted step: same parameters, replicated, traced once.
        self.assertEqual(r["step_cache_size"], 1)
        self.assertEqual(r["step_sharding"], [])  # replicated
        self.assertEqual(r["step_sharding_devices"], 8)
        self.assertLess(r["step_max_error"], 1e-5)
        self.assertEqual(r["metrics_shape"], [2])

    def test_run_saved_on_eight_resumed_on_four_loaded_on_one(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        r = _run_eight_devices(_EIGHT_DEVICES_RUN, tmp)
        cut = os.path.join(tmp, "cut")

        # Saved on 8 devices, resumed on 4, loaded here on 1: the same
        # parameters as the uninterrupted run on one device.
        self.assertEqual(r["run_devices"], [8, 4])
        self.assertEqual(r["resumed_from_epoch"], 1)
        _, got, info = train.load_checkpoint(cut)
        self.assertEqual(info["epoch"], 2)
        self.assertEqual(
            got.params["head"]["latent_kernel"].sharding,
            jax.sharding.SingleDeviceSharding(jax.devices()[0]),
        )
        reference = _Reference.directory()
        _, want, _ = train.load_checkpoint(reference)
        _assert_same_params(self, want, got)
        np.testing.assert_allclose(
            [m["val_loss"] for m in ckpt.read_metrics(reference)],
            [m["val_loss"] for m in ckpt.read_metrics(cut)],
            rtol=1e-4,
        )

        self.assertIn("devices=10, but only 8 cpu device", r["too_many"])
        self.assertFalse(r["too_many_dir_exists"])
        self.assertIn(
            "batch_size=100 does not split evenly over 8 devices",
            r["indivisible"],
        )


class TwoProcessesTest(absltest.TestCase):
    def test_two_processes_train_what_one_process_trains(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        out = os.path.join(tmp, "run")
        port = str(_free_port())
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _TWO_PROCESSES, str(i), port, out],
                env=_env(2),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = []
        try:
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=600)
                results.append(_result(stdout, stderr, proc.returncode))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()

        for i, r in enumerate(results):
            self.assertEqual(r["initialized"], [True, True])
            self.assertIn("already initialized with process_id", r["mismatch"])
            self.assertEqual(r["process_index"], i)
            self.assertEqual(r["process_count"], 2)
            self.assertEqual(r["local_devices"], 2)
            # Each process feeds its own half of the global batch.
            self.assertEqual(r["rows"], [100 * i, 100 * (i + 1)])
            self.assertEqual(r["results"]["devices"], 4)
            self.assertEqual(r["results"]["processes"], 2)
        first, second = (r["results"] for r in results)
        self.assertEqual(
            first["test_accuracy_per_seed"], second["test_accuracy_per_seed"]
        )
        # Process 0 alone writes the metrics and plots.
        self.assertLen(first["plots"], 4)
        self.assertEqual(second["plots"], [])
        self.assertEqual(
            [(m["epoch"], m["seed"]) for m in ckpt.read_metrics(out)],
            [(1, 0), (1, 1), (2, 0), (2, 1)],
        )
        self.assertEqual(ckpt.read_config(out)["out_dir"], out)

        # The checkpoint (written by both) loads here, on one device, and
        # holds what a single process trains on the same global batches.
        reference = _Reference.directory()
        _, want, _ = train.load_checkpoint(reference)
        _, got, info = train.load_checkpoint(out)
        self.assertEqual(info["epoch"], 2)
        _assert_same_params(self, want, got)


if __name__ == "__main__":
    absltest.main()
