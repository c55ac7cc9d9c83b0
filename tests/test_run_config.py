"""Tests for the run's ``config.json``: resolved values and resume checks."""

import json
import os
import shutil
import tempfile

import jax
import numpy as np
from absl.testing import absltest
from cli_helpers import run_cli

from bnnjax import checkpoint as ckpt
from bnnjax import train

# A constant schedule: a 1-epoch run resumed to 2 epochs is the 2-epoch run.
FAST = ["--hidden", "16", "--batch-size", "500", "--schedule", "constant"]
RESOLVED = (
    "learning_rate",
    "real_learning_rate",
    "binary_activations",
    "augment",
    "weight_decay",
    "final_lr_fraction",
)


def _read(out_dir):
    with open(os.path.join(out_dir, ckpt.CONFIG_FILE)) as f:
        return json.load(f)


def _config(out_dir, **overrides):
    """The Python form of ``FAST`` at 2 epochs."""
    return train.TrainConfig(
        hidden=(16,),
        batch_size=500,
        schedule="constant",
        epochs=2,
        out_dir=out_dir,
        **overrides,
    )


def _leaves(out_dir):
    _, state, _ = train.load_checkpoint(out_dir)
    return [np.asarray(x) for x in jax.tree.leaves(state)]


class RecordTest(absltest.TestCase):
    """``to_dict(resolved=True)`` and ``from_dict`` without a run."""

    def test_resolved_record_holds_the_values_and_the_defaults(self):
        config = train.TrainConfig()
        record = config.to_dict(resolved=True)
        lr, real_lr = config.learning_rates()
        self.assertEqual(record["learning_rate"], lr)
        self.assertEqual(record["real_learning_rate"], real_lr)
        self.assertIs(record["binary_activations"], False)
        self.assertEqual(record["augment"], "none")
        self.assertEqual(
            record["defaults"],
            {
                "binary_activations": False,
                "learning_rate": lr,
                "real_learning_rate": real_lr,
                "augment": "none",
                "weight_decay": 0.0,
                "final_lr_fraction": 0.0,
            },
        )
        # The plain form is unchanged: None still means the default.
        self.assertIsNone(config.to_dict()["learning_rate"])
        self.assertNotIn("defaults", config.to_dict())

    def test_explicit_values_are_not_defaults(self):
        config = train.TrainConfig(model="cnn", learning_rate=0.5)
        record = config.to_dict(resolved=True)
        self.assertEqual(record["learning_rate"], 0.5)
        self.assertIs(record["binary_activations"], True)
        self.assertEqual(
            sorted(record["defaults"]),
            [
                "augment",
                "binary_activations",
                "final_lr_fraction",
                "real_learning_rate",
                "weight_decay",
            ],
        )

    def test_read_back_resolves_to_the_same_run(self):
        for config in (
            train.TrainConfig(),
            train.TrainConfig(method="bop", real_learning_rate=0.2),
            train.TrainConfig(model="cnn", binary_activations=True),
        ):
            record = json.loads(json.dumps(config.to_dict(resolved=True)))
            again = train.TrainConfig.from_dict(record)
            self.assertEqual(again.resolved(), config.resolved())
            self.assertEqual(again.learning_rates(), config.learning_rates())
            self.assertEqual(
                again.activations_binary, config.activations_binary
            )

    def test_resolved_fills_only_none_fields(self):
        config = train.TrainConfig(learning_rate=0.5)
        resolved = config.resolved()
        self.assertEqual(resolved.learning_rate, 0.5)
        self.assertEqual(
            resolved.real_learning_rate, config.learning_rates()[1]
        )
        self.assertIs(resolved.binary_activations, False)
        self.assertEqual(resolved.resolved(), resolved)

    def test_bad_defaults_entry(self):
        record = train.TrainConfig().to_dict(resolved=True)
        with self.assertRaisesRegex(ValueError, r"defaults.*'colour'"):
            train.TrainConfig.from_dict({**record, "defaults": {"colour": 1}})
        with self.assertRaisesRegex(ValueError, r"defaults=3"):
            train.TrainConfig.from_dict({**record, "defaults": 3})


class RunConfigTest(absltest.TestCase):
    """``config.json`` of real runs, and resuming them."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.one = os.path.join(cls.tmp, "one")
        cls.two = os.path.join(cls.tmp, "two")
        for out_dir, epochs in ((cls.one, "1"), (cls.two, "2")):
            status, _, err = run_cli(
                ["train", *FAST, "--epochs", epochs, "--out", out_dir]
            )
            assert status == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _copy(self, name):
        out_dir = os.path.join(self.tmp, name)
        shutil.copytree(self.one, out_dir)
        return out_dir

    def test_config_json_holds_the_values_used(self):
        saved = _read(self.one)
        lr, real_lr = train.TrainConfig().learning_rates()
        for name in RESOLVED:
            self.assertIsNotNone(saved[name], name)
        self.assertEqual(saved["learning_rate"], lr)
        self.assertEqual(saved["real_learning_rate"], real_lr)
        self.assertIs(saved["binary_activations"], False)
        self.assertEqual(sorted(saved["defaults"]), sorted(RESOLVED))

    def test_resume_message_names_the_value_used(self):
        out_dir = self._copy("other_lr")
        status, out, err = run_cli(
            ["train", "--resume", "--out", out_dir, "--lr", "0.1"]
        )
        self.assertEqual((status, out), (1, ""), err)
        self.assertIn("learning_rate=0.03 (now 0.1)", err)
        self.assertNotIn("None", err)
        config = train.TrainConfig(
            hidden=(16,), batch_size=500, epochs=2, out_dir=out_dir
        )
        with self.assertRaisesRegex(
            ValueError, r"real_learning_rate=0\.001 \(now 0\.5\)"
        ):
            train.run(
                train.TrainConfig(
                    **{
                        **config.to_dict(),
                        "real_learning_rate": 0.5,
                    }
                ),
                resume=True,
            )

    def test_resume_with_the_same_explicit_values(self):
        out_dir = self._copy("same_lr")
        status, out, err = run_cli(
            [
                "train",
                "--resume",
                "--out",
                out_dir,
                "--epochs",
                "2",
                "--lr",
                "0.03",
                "--real-lr",
                "0.001",
            ]
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["resumed_from_epoch"], 1)
        for a, b in zip(_leaves(self.two), _leaves(out_dir), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_resume_from_python_with_defaults_or_values(self):
        out_dir = self._copy("python")
        explicit = _config(
            out_dir, learning_rate=0.03, binary_activations=False
        )
        result = train.run(explicit, resume=True, make_plots=False)
        self.assertEqual(result["resumed_from_epoch"], 1)
        result = train.run(_config(out_dir), resume=True, make_plots=False)
        self.assertEqual(result["resumed_from_epoch"], 2)

    def test_resume_with_another_model_names_the_model(self):
        out_dir = self._copy("model")
        status, _, err = run_cli(
            ["train", "--resume", "--out", out_dir, "--model", "cnn"]
        )
        self.assertEqual(status, 1, err)
        self.assertIn("model='mlp' (now 'cnn')", err)

    def test_old_directory_with_nulls_resumes(self):
        out_dir = self._copy("old")
        old = _read(out_dir)
        del old["defaults"]
        old.update(dict.fromkeys(RESOLVED))
        ckpt.write_config(out_dir, old)
        status, _, err = run_cli(
            ["train", "--resume", "--out", out_dir, "--lr", "0.1"]
        )
        self.assertEqual(status, 1)
        self.assertIn("learning_rate=0.03 (now 0.1)", err)
        status, out, err = run_cli(
            ["train", "--resume", "--out", out_dir, "--epochs", "2"]
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["resumed_from_epoch"], 1)
        for a, b in zip(_leaves(self.two), _leaves(out_dir), strict=True):
            np.testing.assert_array_equal(a, b)
        saved = _read(out_dir)  # rewritten with the values used
        self.assertEqual(saved["learning_rate"], 0.03)
        self.assertIs(saved["binary_activations"], False)


if __name__ == "__main__":
    absltest.main()
