"""Named recipes: their settings, and ``bnnjax train --recipe`` end to end."""

import importlib.util
import json
import os
import shutil
import tempfile
import unittest
from unittest import mock

import pytest
from absl.testing import absltest, parameterized
from cli_helpers import run_cli
from test_augment import _write_cifar

from bnnjax import data, train
from bnnjax.training import recipes

CIFAR_RECIPES = [
    name for name in recipes.RECIPE_NAMES if name.endswith("-cifar10")
]
# A tiny width and batch: one epoch compiles and runs in seconds.
TINY = ["--width", "0.0625", "--epochs", "1", "--no-progress"]


class RecipeTest(parameterized.TestCase):
    def test_the_published_setups_are_there(self):
        self.assertContainsSubset(
            [
                "binarynet-vgg-cifar10",
                "irnet-resnet20-cifar10",
                "irnet-resnet18-cifar10",
                "bireal-resnet18-cifar10",
            ],
            recipes.RECIPE_NAMES,
        )

    @parameterized.parameters(*recipes.RECIPE_NAMES)
    def test_each_recipe_is_a_valid_config_with_its_source(self, name):
        recipe = recipes.get_recipe(name)
        config = recipe.config()
        for field, value in recipe.settings.items():
            self.assertEqual(getattr(config, field), value, field)
        self.assertTrue(recipe.reference)
        if name in CIFAR_RECIPES:
            self.assertEqual(config.dataset, "cifar10")
            self.assertTrue(config.activations_binary)
            self.assertTrue(recipe.published or recipe.deviations)

    def test_paper_settings(self):
        binarynet = recipes.get_recipe("binarynet-vgg-cifar10").config()
        self.assertEqual(
            (binarynet.loss, binarynet.schedule, binarynet.epochs),
            ("squared_hinge", "exponential", 500),
        )
        self.assertEqual(binarynet.augmentation, "none")
        irnet = recipes.get_recipe("irnet-resnet20-cifar10").config()
        self.assertEqual(
            (irnet.optimizer, irnet.learning_rate, irnet.weight_decay),
            ("sgd", 0.1, 1e-4),
        )
        self.assertEqual(irnet.augmentation, "crop_flip")

    def test_overrides_replace_fields(self):
        recipe = recipes.get_recipe("irnet-resnet18-cifar10")
        config = recipe.config(epochs=3, seeds=(1, 2), width=0.5)
        self.assertEqual((config.epochs, config.seeds), (3, (1, 2)))
        self.assertEqual(config.width, 0.5)
        self.assertEqual(config.method, "irnet")

    def test_unknown_name_lists_the_known_ones(self):
        with self.assertRaisesRegex(
            ValueError, r"Unknown recipe 'vgg'; expected one of \[.*'irnet"
        ):
            recipes.get_recipe("vgg")


class RecipeCliErrorsTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_help_lists_the_recipes(self):
        status, out, _ = run_cli(["train", "--help"])
        self.assertEqual(status, 0)
        table = out.split("recipes (--recipe NAME")[1]
        for name in recipes.RECIPE_NAMES:
            self.assertRegex(table, rf"\n  {name} +\S")

    def test_bad_combinations_exit_2_with_one_line(self):
        out_dir = os.path.join(self.tmp, "run")
        for argv, message in [
            (["--recipe", "vgg"], "argument --recipe: invalid choice: 'vgg'"),
            (
                [
                    "--recipe",
                    "irnet-resnet20-cifar10",
                    "--resume",
                    "--out",
                    out_dir,
                ],
                "--recipe starts a new run; --resume continues one",
            ),
            (
                ["--recipe", "binarynet-vgg-cifar10", "--hidden", "64"],
                "--hidden sets MLP widths; it does not apply to --model cnn",
            ),
            (
                [
                    "--recipe",
                    "binarynet-vgg-cifar10",
                    "--label-smoothing",
                    "0.1",
                    "--out",
                    out_dir,
                ],
                "applies to loss='cross_entropy' only",
            ),
        ]:
            status, out, err = run_cli(["train", *argv])
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn(message, err)
            self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(out_dir))


def _config(out_dir):
    with open(os.path.join(out_dir, "config.json")) as f:
        return json.load(f)


class CifarFilesTest(parameterized.TestCase):
    """``--recipe NAME --dataset cifar:DIR`` on CIFAR files the test writes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.spec = "cifar:" + os.path.join(cls.tmp, "cifar")
        _write_cifar(os.path.join(cls.tmp, "cifar"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def train(self, name):
        out_dir = os.path.join(self.tmp, name)
        # 80 training, 20 validation and 20 test examples.
        flags = ["--dataset", self.spec, "--val-fraction", "0.2"]
        flags += ["--batch-size", "40", *TINY, "--out", out_dir]
        status, out, err = run_cli(["train", "--recipe", name, *flags])
        self.assertEqual(status, 0, err)
        return json.loads(out), _config(out_dir)

    def check(self, name, result, config):
        recipe = recipes.get_recipe(name)
        want = {**recipe.settings, "epochs": 1, "width": 0.0625}
        want.update(batch_size=40, dataset=self.spec, val_fraction=0.2)
        for field, value in want.items():
            self.assertEqual(config[field], value, field)
        self.assertEqual(result["steps"], 2)
        self.assertEqual(result["test_total"], 20)
        self.assertEqual(result["model"], recipe.settings["model"])
        # The saved settings rebuild the recipe's config.
        again = train.TrainConfig.from_dict(config)
        self.assertEqual(
            again.resolved(),
            recipe.config(
                epochs=1,
                width=0.0625,
                batch_size=40,
                dataset=self.spec,
                val_fraction=0.2,
                out_dir=config["out_dir"],
            ).resolved(),
        )

    def test_binarynet_vgg(self):
        result, config = self.train("binarynet-vgg-cifar10")
        self.check("binarynet-vgg-cifar10", result, config)

    # The mark goes under parameterized.parameters: above it, it would
    # mark the iterator, not the generated tests, and they would run.
    @parameterized.parameters(
        "irnet-resnet20-cifar10",
        "irnet-resnet18-cifar10",
        "bireal-resnet18-cifar10",
    )
    @pytest.mark.slow
    def test_resnet_recipes(self, name):
        result, config = self.train(name)
        self.check(name, result, config)


@unittest.skipIf(
    importlib.util.find_spec("tensorflow_datasets") is None,
    "needs the data extra",
)
class MockTfdsTest(parameterized.TestCase):
    """Each recipe's own command (TFDS ``cifar10``) on TFDS mock data."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    @parameterized.parameters("binarynet-vgg-cifar10", "irnet-resnet20-cifar10")
    def test_recipe_trains_on_tfds_cifar10(self, name):
        self.assert_trains(name)

    @parameterized.parameters(
        "irnet-resnet18-cifar10", "bireal-resnet18-cifar10"
    )
    @pytest.mark.slow
    def test_resnet18_recipes_train_on_tfds_cifar10(self, name):
        self.assert_trains(name)

    def test_every_cifar_recipe_is_tested(self):
        tested = {"binarynet-vgg-cifar10", "irnet-resnet20-cifar10"}
        tested |= {"irnet-resnet18-cifar10", "bireal-resnet18-cifar10"}
        self.assertEqual(tested, set(CIFAR_RECIPES))

    def assert_trains(self, name):
        import tensorflow_datasets as tfds

        out_dir = os.path.join(self.tmp, "run")
        with (
            tfds.testing.mock_data(
                num_examples=100, policy=tfds.testing.MockPolicy.USE_CODE
            ),
            mock.patch.object(data, "_download_possible", return_value=True),
        ):
            status, out, err = run_cli(
                [
                    "train",
                    "--recipe",
                    name,
                    "--data-dir",
                    os.path.join(self.tmp, "tfds"),
                    "--batch-size",
                    "30",
                    *TINY,
                    "--out",
                    out_dir,
                ]
            )
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertEqual(result["dataset"], "cifar10")
        self.assertEqual(result["steps"], 3)  # 90 of 100 after validation
        self.assertEqual(result["test_total"], 100)
        self.assertBetween(result["test_accuracy"], 0.0, 1.0)
        config = _config(out_dir)
        for field, value in recipes.get_recipe(name).settings.items():
            if field not in ("epochs", "batch_size"):
                self.assertEqual(config[field], value, field)


if __name__ == "__main__":
    absltest.main()
