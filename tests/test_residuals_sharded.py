"""Packed residuals under sharding: the data-parallel training step on 4
simulated devices, with two seeds in one vmap, ends bit for bit where the
unpacked step ends, for a binary MLP (clipped STE activations: signs and
windows packed) and a Bi-Real ResNet (ApproxSign activations: the
product's signs packed). A subprocess, so the device count can be set
before jax starts.

With the clipped STE's window packed inside the ResNet, XLA fuses the
surrounding batch-norm reductions differently and the step's results
differ from the unpacked step's by float rounding (about 1e-7); each
layer's gradient stays bit for bit the same (``tests/test_residuals.py``).
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json
import jax
import jax.numpy as jnp
import numpy as np
import optax
import bnnjax
from bnnjax import distributed, train
from bnnjax.models import linen as models

sign = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
approx = bnnjax.Binarizer(surrogate="approx_sign", scale=None)
mesh = distributed.data_mesh()
rng = np.random.default_rng(0)
result = {"devices": jax.device_count()}
builds = {
    "mlp": lambda r: models.BinaryMLP(
        hidden=(32, 32), binary_activations=True,
        activation_binarizer=sign, residuals=r,
    ),
    # Bi-Real's own ApproxSign: its derivative needs the real inputs, so
    # only the product's +-1 operands are packed (see the module doc).
    "resnet": lambda r: models.bireal_resnet20(
        num_classes=10, width_multiplier=0.25,
        activation_binarizer=approx, residuals=r,
    ),
}
for name, build in builds.items():
    images = rng.integers(0, 256, (2, 16, 8, 8, 1), np.uint8)
    labels = rng.integers(0, 10, (2, 16)).astype(np.int32)
    finals = {}
    for residuals in ("packed", "unpacked"):
        model = build(residuals)
        tx = optax.adam(1e-2)
        sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
        state = train.init_state(model, tx, (0, 1), sample, mesh=mesh)
        start = [np.asarray(a) for a in jax.tree.leaves(state.params)]
        step = train.make_train_step(model, tx, mesh=mesh)
        for _ in range(3):
            state, metrics = step(state, images, labels, np.float32(0.5))
        finals[residuals] = [np.asarray(a) for a in jax.tree.leaves(state)]
        end = [np.asarray(a) for a in jax.tree.leaves(state.params)]
    result[name] = {
        "equal": all(
            np.array_equal(a, b, equal_nan=True)
            for a, b in zip(finals["packed"], finals["unpacked"], strict=True)
        ),
        # The parameters moved and the losses are finite: the step trained.
        "moved": any(not np.array_equal(a, b) for a, b in zip(start, end))
        and bool(np.isfinite(np.asarray(metrics["loss"])).all()),
    }
print("RESULT " + json.dumps(result))
"""


class ShardedResidualsTest(absltest.TestCase):
    def test_packed_step_on_four_devices_equals_unpacked(self):
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + " --xla_force_host_platform_device_count=4"
        )
        env["JAX_PLATFORMS"] = "cpu"
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=600,
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        result = json.loads(lines[0][len("RESULT ") :])
        self.assertEqual(result["devices"], 4)
        for name in ("mlp", "resnet"):
            self.assertTrue(result[name]["equal"], name)
            self.assertTrue(result[name]["moved"], name)


if __name__ == "__main__":
    absltest.main()
