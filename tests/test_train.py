"""Tests for bnnjax.train, bnnjax.presets and bnnjax.checkpoint."""

import dataclasses
import json
import os
import shutil
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import absltest, parameterized

import bnnjax
from bnnjax import checkpoint as ckpt
from bnnjax import data, distributed, presets, train
from bnnjax.training import loop as loop_lib
from bnnjax.training import step as step_lib

# A tiny but real run: 2 epochs of 27 steps on the embedded MNIST sample.
TINY = dict(hidden=(32,), epochs=2, batch_size=200, val_fraction=0.1)


def _tiny_config(out_dir, **overrides):
    return train.TrainConfig(**{**TINY, "out_dir": out_dir, **overrides})


def _synthetic_batches(num_seeds, steps, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (steps, num_seeds, batch, 8, 8, 1), np.uint8)
    labels = rng.integers(0, 10, (steps, num_seeds, batch)).astype(np.int32)
    return images, labels


def _always_vmap(fn, in_axes):
    return jax.vmap(fn, in_axes=in_axes)


def _setup(method="scaled_sigmoid", seeds=(0,), size=8, **overrides):
    config = train.TrainConfig(
        method=method, **{"hidden": (16,), "seeds": seeds, **overrides}
    )
    model = train.build_model(config, 10)
    sample = jnp.zeros((1, size, size, 1), jnp.float32)
    lr, real_lr = config.learning_rates()
    tx = config.preset.optimizer(
        train.abstract_params(model, sample),
        make_optimizer=config.make_optimizer,
        learning_rate=lr,
        real_learning_rate=real_lr,
    )
    state = train.init_state(
        model, tx, seeds, sample, sign_init=config.preset.sign_init
    )
    return model, tx, state


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


class TrainConfigTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("model", dict(model="vgg"), r"model='vgg'.*'mlp'"),
        ("method", dict(method="magic"), r"method='magic'.*'scaled_sigmoid'"),
        ("optimizer", dict(optimizer="lamb"), r"optimizer='lamb'.*'adam'"),
        ("schedule", dict(schedule="step"), r"schedule='step'.*'cosine'"),
        ("epochs", dict(epochs=0), r"epochs=0; expected a positive int"),
        ("batch", dict(batch_size=-1), r"batch_size=-1"),
        ("bool_epochs", dict(epochs=True), r"epochs=True"),
        ("lr", dict(learning_rate=-1e-3), r"learning_rate=-0.001"),
        ("lr_inf", dict(learning_rate=float("inf")), r"learning_rate=inf"),
        ("real_lr", dict(real_learning_rate=0.0), r"real_learning_rate=0.0"),
        ("seeds_dup", dict(seeds=(1, 1)), r"seeds=\(1, 1\).*distinct"),
        ("seeds_neg", dict(seeds=(-1,)), r"seeds=\(-1,\)"),
        ("seeds_empty", dict(seeds=()), r"seeds=\(\)"),
        ("val", dict(val_fraction=1.0), r"val_fraction=1.0.*\(0, 1\)"),
        ("hidden", dict(hidden=(64, 0)), r"hidden=\(64, 0\)"),
        ("hidden_empty", dict(hidden=()), r"hidden=\(\)"),
        ("dataset", dict(dataset=""), r"dataset=''"),
        (
            "cnn_real_acts",
            dict(model="cnn", binary_activations=False),
            r"binary_activations=False with model='cnn'",
        ),
    )
    def test_invalid_values_name_field_value_and_allowed(self, kwargs, regex):
        with self.assertRaisesRegex(ValueError, regex):
            train.TrainConfig(**kwargs)

    def test_wrong_types(self):
        with self.assertRaisesRegex(TypeError, "hidden='256'"):
            train.TrainConfig(hidden="256")
        with self.assertRaisesRegex(TypeError, "binary_activations='yes'"):
            train.TrainConfig(binary_activations="yes")

    def test_is_frozen_keyword_only_and_normalises_sequences(self):
        config = train.TrainConfig(hidden=[8, 4], seeds=3)
        self.assertEqual(config.hidden, (8, 4))
        self.assertEqual(config.seeds, (3,))
        with self.assertRaises(dataclasses.FrozenInstanceError):
            config.epochs = 3
        with self.assertRaises(TypeError):
            train.TrainConfig("mnist-sample")

    def test_dict_round_trip_and_unknown_field(self):
        config = train.TrainConfig(seeds=(0, 2), hidden=(8,), method="bop")
        again = train.TrainConfig.from_dict(
            json.loads(json.dumps(config.to_dict()))
        )
        self.assertEqual(again, config)
        with self.assertRaisesRegex(ValueError, r"Unknown.*\['colour'\]"):
            train.TrainConfig.from_dict({"colour": "red"})

    def test_resolved_defaults(self):
        config = train.TrainConfig()
        self.assertEqual(config.preset.name, "scaled_sigmoid")
        self.assertFalse(config.activations_binary)
        self.assertTrue(train.TrainConfig(model="cnn").activations_binary)
        self.assertEqual(config.learning_rates(), (3e-2, 1e-3))
        self.assertEqual(
            train.TrainConfig(learning_rate=0.5).learning_rates()[0], 0.5
        )
        self.assertTrue(callable(config.schedule_fn(1.0, 10)))
        self.assertEqual(
            train.TrainConfig(schedule="constant").schedule_fn(1.0, 10), 1.0
        )

    def test_unknown_preset(self):
        with self.assertRaisesRegex(ValueError, r"'nope'.*'bop'"):
            presets.get_preset("nope")


class MethodOptionsTest(absltest.TestCase):
    def test_options_build_the_preset_and_round_trip(self):
        config = train.TrainConfig(
            method="scaled_sigmoid",
            method_options={"scale": "mean_abs", "k": 4.0},
        )
        self.assertEqual(
            config.method_options, (("k", 4.0), ("scale", "mean_abs"))
        )
        self.assertEqual(config.options, {"k": 4.0, "scale": "mean_abs"})
        self.assertEqual(config.preset.kernel_binarizer.surrogate.k, 4.0)
        self.assertEqual(
            type(config.preset.kernel_binarizer.scale).__name__,
            "MeanAbsScale",
        )
        again = train.TrainConfig.from_dict(
            json.loads(json.dumps(config.to_dict()))
        )
        self.assertEqual(again, config)
        self.assertEqual(hash(again), hash(config))
        self.assertIsNone(train.TrainConfig(method_options={}).method_options)

    def test_bad_options(self):
        with self.assertRaisesRegex(ValueError, "'zz'.*'k', 'scale'"):
            train.TrainConfig(method_options={"zz": 1})
        with self.assertRaisesRegex(ValueError, "no options"):
            train.TrainConfig(method="bnn", method_options={"k": 1.0})
        with self.assertRaisesRegex(TypeError, "mapping of option name"):
            train.TrainConfig(method_options=3)


class DefaultDevicesTest(parameterized.TestCase):
    @parameterized.parameters(
        # (devices available, processes, batch size, devices used)
        (1, 1, 100, 1),
        (8, 1, 128, 8),
        (8, 1, 100, 5),  # the most that 100 splits over
        (8, 1, 7, 7),
        (8, 2, 100, 4),  # and a multiple of the process count
        (8, 2, 7, None),  # nothing fits: data_mesh explains
    )
    def test_most_devices_that_fit(self, available, processes, batch, want):
        config = train.TrainConfig(batch_size=batch)
        with (
            mock.patch.object(jax, "device_count", return_value=available),
            mock.patch.object(jax, "process_count", return_value=processes),
        ):
            self.assertEqual(loop_lib._default_devices(config), want)

    def test_explicit_devices_are_kept(self):
        config = train.TrainConfig(batch_size=100, devices=4)
        with mock.patch.object(jax, "device_count", return_value=8):
            self.assertEqual(loop_lib._default_devices(config), 4)


class PresetTest(parameterized.TestCase):
    def test_registry_lists_every_method(self):
        self.assertEqual(
            presets.PRESET_NAMES,
            (
                "scaled_sigmoid",
                "bnn",
                "xnor",
                "bireal",
                "irnet",
                "bnn_plus",
                "bop",
                "float",
            ),
        )
        for name in presets.PRESET_NAMES:
            preset = presets.get_preset(name)
            self.assertEqual(preset.name, name)
            self.assertIsInstance(preset.kernel_binarizer, bnnjax.Binarizer)
            self.assertIsInstance(preset.activation_binarizer, bnnjax.Binarizer)

    def test_founding_method_rules(self):
        preset = presets.get_preset("scaled_sigmoid")
        self.assertEqual(
            preset.kernel_binarizer,
            bnnjax.Binarizer(
                surrogate="scaled_sigmoid", scale="mean_abs_dev", axis=-1
            ),
        )
        self.assertEqual(
            preset.activation_binarizer,
            bnnjax.Binarizer(surrogate="scaled_sigmoid", scale=None),
        )

    @parameterized.parameters(*presets.PRESET_NAMES)
    def test_builds_and_takes_one_finite_step(self, method):
        model, tx, state = _setup(method, binary_activations=True)
        step = train.make_train_step(model, tx)
        images, labels = _synthetic_batches(1, 1)
        before = _leaves(state.params)
        state, metrics = step(state, images[0], labels[0], np.float32(0.3))
        self.assertEqual(metrics["loss"].shape, (1,))
        self.assertTrue(np.all(np.isfinite(metrics["loss"])))
        changed = [
            not np.array_equal(a, b)
            for a, b in zip(before, _leaves(state.params), strict=True)
        ]
        self.assertTrue(any(changed))
        kernels = train.latent_kernels(state.params)
        self.assertEqual(list(kernels), ["dense_0", "head"])
        if method == "bop":  # latent-free: kernels stay +-1
            for w in kernels.values():
                self.assertTrue(set(np.unique(np.asarray(w))) <= {-1.0, 1.0})
        if method == "bnn":  # latent clipping
            for w in kernels.values():
                self.assertLessEqual(float(jnp.max(jnp.abs(w))), 1.0)

    def test_binary_group_gets_the_binary_transform(self):
        # scale_adaptive steps are a fraction lr of each channel's spread.
        _, tx, state = _setup("scaled_sigmoid")
        one = jax.tree.map(lambda x: x[0], state)
        grads = jax.tree.map(jnp.ones_like, one.params)
        updates, _ = tx.update(grads, one.opt_state, one.params)
        kernel = one.params["dense_0"]["latent_kernel"]
        spread = bnnjax.mean_abs_dev(kernel, (0,))
        np.testing.assert_allclose(
            updates["dense_0"]["latent_kernel"],
            -3e-2 * jnp.broadcast_to(spread, kernel.shape),
            rtol=1e-4,
        )
        bias = updates["dense_norm_0"]["bias"]
        np.testing.assert_allclose(bias, -1e-3 * jnp.ones_like(bias), rtol=1e-4)

    def test_float_preset_computes_with_real_kernels(self):
        preset = presets.get_preset("float")
        w = jnp.array([[0.25, -0.5]])
        np.testing.assert_array_equal(preset.kernel_binarizer(w), w)
        np.testing.assert_array_equal(
            preset.activation_binarizer(jnp.array([-3.0, 0.5])),
            jnp.array([-1.0, 0.5]),
        )
        self.assertFalse(preset.binary)


class StepTest(parameterized.TestCase):
    def test_loss_decreases(self):
        ds = data.load_dataset("mnist-sample")
        model, tx, state = _setup("scaled_sigmoid", size=28, hidden=(32,))
        step = train.make_train_step(model, tx)
        losses = []
        for epoch in range(3):
            for images, labels in data.iterate_batches(
                ds.train_images,
                ds.train_labels,
                batch_size=128,
                seed=[0],
                epoch=epoch,
            ):
                state, metrics = step(state, images, labels, np.float32(0))
                losses.append(float(metrics["loss"][0]))
        self.assertLess(np.mean(losses[-20:]), 0.6 * np.mean(losses[:10]))

    @parameterized.parameters((1,), (2,))
    def test_one_seed_without_vmap_equals_the_vmapped_step(self, seeds):
        # One seed runs the unbatched body; it must compute what the
        # vmapped step computes for that seed (to float rounding).
        model, tx, state = _setup("scaled_sigmoid", seeds=tuple(range(seeds)))
        images, labels = _synthetic_batches(seeds, 1)
        fast = train.make_train_step(model, tx)
        with mock.patch.object(step_lib, "_over_seeds", _always_vmap):
            slow = train.make_train_step(model, tx)
        got, got_m = fast(state, images[0], labels[0], np.float32(0.3))
        want, want_m = slow(state, images[0], labels[0], np.float32(0.3))
        for a, b in zip(_leaves(got), _leaves(want), strict=True):
            self.assertEqual(a.shape, b.shape)
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got_m["loss"], want_m["loss"], rtol=1e-6)
        # On CPU the state is not donated: the input stays readable.
        if jax.default_backend() == "cpu":
            self.assertTrue(all(np.isfinite(x).all() for x in _leaves(state)))

    def test_step_traces_once_as_progress_changes(self):
        model, tx, state = _setup("irnet", binary_activations=True)
        traces = []

        def update(updates, opt_state, params=None):
            traces.append(None)  # runs only while tracing
            return tx.update(updates, opt_state, params)

        counting = optax.GradientTransformation(tx.init, update)
        step = train.make_train_step(model, counting)
        images, labels = _synthetic_batches(1, 3)
        for i, progress in enumerate((0.0, 0.5, 1.0)):
            state, _ = step(state, images[i], labels[i], np.float32(progress))
        self.assertLen(traces, 1)
        self.assertEqual(step._cache_size(), 1)

    def test_seeds_together_equal_seeds_alone(self):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (64, 8, 8, 1), np.uint8)
        labels = rng.integers(0, 10, 64).astype(np.int32)

        def final_state(seeds):
            model, tx, state = _setup(seeds=seeds)
            step = train.make_train_step(model, tx)
            for epoch in range(2):
                for x, y in data.iterate_batches(
                    images, labels, batch_size=16, seed=list(seeds), epoch=epoch
                ):
                    state, _ = step(state, x, y, np.float32(0))
            return state

        both = final_state((0, 1))
        for i, seed in enumerate((0, 1)):
            alone = final_state((seed,))
            for a, b in zip(_leaves(both), _leaves(alone), strict=True):
                np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)
        # The seeds really differ.
        kernel = both.params["dense_0"]["latent_kernel"]
        self.assertFalse(np.allclose(kernel[0], kernel[1]))

    def test_evaluate_pads_and_masks(self):
        model, _, state = _setup(seeds=(0, 1))
        eval_step = train.make_eval_step(model)
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (7, 8, 8, 1), np.uint8)
        labels = rng.integers(0, 10, 7).astype(np.int32)
        loss, acc = train.evaluate(
            eval_step, state, images, labels, batch_size=3
        )
        full_loss, full_acc = train.evaluate(
            eval_step, state, images, labels, batch_size=7
        )
        self.assertEqual(loss.shape, (2,))
        np.testing.assert_allclose(loss, full_loss, rtol=1e-5)
        np.testing.assert_allclose(acc, full_acc)
        self.assertEqual(eval_step._cache_size(), 2)  # sizes 3 and 7 only


class MeshStepTest(absltest.TestCase):
    """The data-parallel path on this process's device(s); many-device
    checks are in tests/test_distributed.py (subprocesses)."""

    def test_mesh_step_and_evaluate_equal_the_plain_ones(self):
        mesh = distributed.data_mesh(1)
        images, labels = _synthetic_batches(2, 3, batch=16)
        states = []
        for m in (None, mesh):
            model, tx, state = _setup(seeds=(0, 1))
            if m is not None:
                state = train.init_state(
                    model,
                    tx,
                    (0, 1),
                    jnp.zeros((1, 8, 8, 1), jnp.float32),
                    mesh=m,
                )
            step = train.make_train_step(model, tx, mesh=m)
            for i in range(3):
                state, _ = step(state, images[i], labels[i], np.float32(0))
            loss, acc = train.evaluate(
                train.make_eval_step(model, mesh=m),
                state,
                images[0, 0, :7],
                labels[0, 0, :7],
                batch_size=3,
                mesh=m,
            )
            states.append((state, loss, acc))
        (plain, plain_loss, plain_acc), (meshed, loss, acc) = states
        self.assertEqual(
            meshed.params["head"]["latent_kernel"].sharding,
            distributed.replicated(mesh),
        )
        for a, b in zip(_leaves(plain), _leaves(meshed), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
        np.testing.assert_array_equal(acc, plain_acc)


class DiagnosticsTest(absltest.TestCase):
    def test_latent_kernels_by_layer_path(self):
        params = {
            "blocks_0": {"conv": {"latent_kernel": jnp.ones((3, 3, 2, 4))}},
            "stem": {"kernel": jnp.ones((3,))},
            "head": {"latent_kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
        }
        kernels = train.latent_kernels(params)
        self.assertEqual(sorted(kernels), ["blocks_0/conv", "head"])

    def test_flip_ratio(self):
        rule = bnnjax.Binarizer(surrogate="ste", scale=None)
        before = train.kernel_signs(
            {"a": jnp.array([1.0, -1.0, 0.0, 2.0]), "b": jnp.ones((2, 2))},
            rule,
        )
        after = train.kernel_signs(
            {"a": jnp.array([-1.0, -1.0, -0.5, 2.0]), "b": jnp.ones((2, 2))},
            rule,
        )
        total, layers = train.flip_ratio(before, after)
        self.assertAlmostEqual(float(layers["a"]), 0.5)  # 0.0 counts as +1
        self.assertAlmostEqual(float(layers["b"]), 0.0)
        self.assertAlmostEqual(float(total), 2 / 8)
        with self.assertRaisesRegex(ValueError, "layers differ"):
            train.flip_ratio(before, {"a": after["a"]})

    def test_kernel_signs_follow_centring(self):
        rule = bnnjax.Binarizer(surrogate="ste", scale=None, center=True)
        signs = train.kernel_signs(
            {"a": jnp.array([[1.0], [2.0], [4.0]])}, rule
        )
        np.testing.assert_array_equal(signs["a"][:, 0], [False, False, True])

    def test_gradient_fraction_clipped_ste_and_scale_invariance(self):
        clipped = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
        w = jnp.array([[0.5, 2.0], [-1.0, -3.0]])
        total, layers = train.gradient_fraction({"w": w}, clipped)
        self.assertAlmostEqual(float(total), 0.5)
        self.assertAlmostEqual(float(layers["w"]), 0.5)
        founding = bnnjax.Binarizer(axis=-1)
        v = jax.random.normal(jax.random.key(0), (256, 8))
        fractions = [
            float(train.gradient_fraction({"w": c * v}, founding)[0])
            for c in (1e-3, 1.0, 1e3)
        ]
        self.assertGreater(fractions[0], 0.95)
        np.testing.assert_allclose(fractions, fractions[0], rtol=1e-6)
        # The clipped STE reaches almost none of large weights.
        big = float(train.gradient_fraction({"w": 1e3 * v}, clipped)[0])
        self.assertLess(big, 0.01)

    def test_gradient_fraction_ede_narrows_with_progress(self):
        rule = bnnjax.Binarizer(surrogate="ede", scale=None)
        w = {"w": jnp.linspace(-1, 1, 201)[:, None]}
        early = float(train.gradient_fraction(w, rule, progress=0.0)[0])
        late = float(train.gradient_fraction(w, rule, progress=1.0)[0])
        self.assertEqual(early, 1.0)
        # 1 - tanh(10 x)^2 >= 0.01  <=>  |x| <= 0.2993
        self.assertAlmostEqual(late, 59 / 201, places=6)
        with self.assertRaisesRegex(ValueError, "deterministic"):
            train.gradient_fraction(
                w, bnnjax.Binarizer(surrogate="stochastic", scale=None)
            )

    def test_gradient_fraction_irnet_standardized_follows_the_scale(self):
        # IR-Net's window anneals on (w - mean) / std: the fraction of
        # weights it reaches late in training is the same at any scale and
        # narrow; evaluated on w - mean alone it stays wide for small weights.
        v = jax.random.normal(jax.random.key(1), (512, 4))
        rule = presets.get_preset("irnet").kernel_binarizer
        self.assertTrue(rule.standardize)
        fractions = [
            float(train.gradient_fraction({"w": c * v}, rule, progress=1.0)[0])
            for c in (0.01, 1.0, 100.0)
        ]
        np.testing.assert_allclose(fractions, fractions[0], rtol=1e-6)
        self.assertLess(fractions[0], 0.35)
        old = presets.get_preset("irnet", standardize=False).kernel_binarizer
        small = train.gradient_fraction({"w": 0.01 * v}, old, progress=1.0)
        self.assertGreater(float(small[0]), 0.99)

    def test_latent_stats(self):
        w = jnp.array([-2.0, 0.0, 0.0, 2.0] + [0.0] * 96)
        stats = train.latent_stats({"w": w})["w"]
        self.assertAlmostEqual(float(stats["mean"]), 0.0)
        self.assertAlmostEqual(float(stats["mean_abs_dev"]), 0.04)
        self.assertAlmostEqual(float(stats["std"]), np.sqrt(8 / 100), places=6)
        self.assertAlmostEqual(float(stats["max_abs"]), 2.0)
        self.assertAlmostEqual(float(stats["beyond_3_mad"]), 0.02)


class RunTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _dir(self, name):
        return os.path.join(self.tmp, name)

    def test_run_writes_the_run_directory(self):
        out = self._dir("run")
        epochs = []
        result = train.run(
            _tiny_config(out, seeds=(0, 1)),
            on_epoch=lambda e, records: epochs.append((e, len(records))),
        )
        self.assertEqual(epochs, [(1, 2), (2, 2)])
        self.assertEqual(len(result["test_accuracy_per_seed"]), 2)
        self.assertGreater(result["test_accuracy"], 0.3)  # chance: 0.1
        self.assertAlmostEqual(
            result["test_accuracy"], np.mean(result["test_accuracy_per_seed"])
        )
        self.assertEqual(result["binary_params"], 784 * 32 + 32 * 10)
        self.assertEqual(result["packed_bytes"], 98 * 32 + 4 * 10)
        self.assertEqual(result["latent_bytes"], 4 * result["binary_params"])
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["seeds"], [0, 1])
        records = ckpt.read_metrics(out)
        self.assertEqual(
            [(r["epoch"], r["seed"]) for r in records],
            [(1, 0), (1, 1), (2, 0), (2, 1)],
        )
        for key in (
            "train_loss",
            "val_accuracy",
            "flip_ratio",
            "gradient_fraction",
            "latent",
            "learning_rate",
        ):
            self.assertIn(key, records[0])
        self.assertGreater(records[0]["flip_ratio"], 0)
        self.assertEqual(
            sorted(records[0]["latent"]["dense_0"]),
            ["beyond_3_mad", "max_abs", "mean", "mean_abs_dev", "std"],
        )
        for name in ("curves.png", "flip_ratio.png", "latent_histograms.png"):
            self.assertTrue(os.path.getsize(os.path.join(out, name)) > 1000)
        model, state, info = train.load_checkpoint(out)
        self.assertEqual(info["epoch"], 2)
        self.assertEqual(
            state.params["head"]["latent_kernel"].shape, (2, 32, 10)
        )
        del model

    def test_refuses_non_empty_directory_without_resume(self):
        out = self._dir("taken")
        os.makedirs(out)
        with open(os.path.join(out, "notes.txt"), "w") as f:
            f.write("keep me")
        with self.assertRaisesRegex(FileExistsError, r"not empty.*--resume"):
            train.run(_tiny_config(out))
        self.assertEqual(os.listdir(out), ["notes.txt"])
        with self.assertRaisesRegex(FileNotFoundError, "Nothing to resume"):
            train.run(_tiny_config(self._dir("empty")), resume=True)

    def test_batch_larger_than_dataset(self):
        with self.assertRaisesRegex(ValueError, r"batch_size=100000"):
            train.run(_tiny_config(self._dir("big"), batch_size=100000))
        self.assertFalse(os.path.exists(self._dir("big")))

    def test_resume_equals_uninterrupted_and_survives_partial_write(self):
        full = self._dir("full")
        train.run(_tiny_config(full, epochs=3), make_plots=False)

        cut = self._dir("cut")

        def kill_after_first(epoch, records):
            del records
            if epoch == 1:
                raise KeyboardInterrupt

        with self.assertRaises(KeyboardInterrupt):
            train.run(
                _tiny_config(cut, epochs=3),
                on_epoch=kill_after_first,
                make_plots=False,
            )
        # A kill during the next save leaves orbax's temporary directory
        # (and a metrics line for an epoch that has no checkpoint).
        partial = os.path.join(
            cut, "checkpoints", "2.orbax-checkpoint-tmp-1234567"
        )
        os.makedirs(os.path.join(partial, "state"))
        with open(os.path.join(partial, "state", "junk"), "wb") as f:
            f.write(b"\0" * 100)
        ckpt.append_metrics(cut, [{"epoch": 2, "seed": 0, "val_loss": 9.9}])
        _, _, info = train.load_checkpoint(cut)  # the last complete one
        self.assertEqual(info["epoch"], 1)

        with self.assertRaisesRegex(ValueError, r"hidden=\[32\] \(now \[8\]\)"):
            train.run(_tiny_config(cut, epochs=3, hidden=(8,)), resume=True)
        result = train.run(
            _tiny_config(cut, epochs=3), resume=True, make_plots=False
        )
        self.assertEqual(result["resumed_from_epoch"], 1)
        self.assertFalse(os.path.exists(partial))
        _, want, _ = train.load_checkpoint(full)
        _, got, info = train.load_checkpoint(cut)
        self.assertEqual(info["epoch"], 3)
        for a, b in zip(_leaves(want), _leaves(got), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        self.assertEqual(
            [r["epoch"] for r in ckpt.read_metrics(cut)], [1, 2, 3]
        )
        self.assertEqual(
            ckpt.read_metrics(cut)[1]["val_loss"],
            ckpt.read_metrics(full)[1]["val_loss"],
        )

    def test_non_finite_loss_stops_and_keeps_last_checkpoint(self):
        out = self._dir("nan")

        def poison(step, state):
            if step == 30:  # epoch 2 (27 steps per epoch)
                params = jax.tree.map(lambda x: x * jnp.nan, state.params)
                return state._replace(params=params)
            return state

        with self.assertRaisesRegex(
            train.NonFiniteLossError, r"step 31 \(epoch 2, batch 4 of 27\)"
        ) as raised:
            train.run(_tiny_config(out), before_step=poison, make_plots=False)
        self.assertEqual(raised.exception.last_checkpoint, 1)
        self.assertIn("epoch 1", str(raised.exception))
        self.assertEqual([r["epoch"] for r in ckpt.read_metrics(out)], [1])
        _, state, info = train.load_checkpoint(out)
        self.assertEqual(info["epoch"], 1)
        for leaf in _leaves(state.params):
            self.assertTrue(np.all(np.isfinite(leaf)))

    def test_corrupt_and_mismatched_checkpoints_raise_clear_errors(self):
        out = self._dir("corrupt")
        train.run(_tiny_config(out, epochs=1), make_plots=False)
        step_dir = os.path.join(out, "checkpoints", "1")
        checkpointer = ckpt.Checkpointer(os.path.join(out, "checkpoints"))
        self.addCleanup(checkpointer.close)
        wrong = {"x": jax.ShapeDtypeStruct((3,), jnp.float32)}
        with self.assertRaisesRegex(ckpt.CheckpointError, "does not match"):
            checkpointer.restore(wrong)
        _, state, _ = train.load_checkpoint(out)
        bad = state._replace(
            params={**state.params, "head": {"latent_kernel": jnp.ones(3)}}
        )
        with self.assertRaisesRegex(
            ckpt.CheckpointError, r"\['head'\]\['latent_kernel'\]"
        ):
            checkpointer.restore(bad)
        # Corrupt every data file of the step.
        for root, _, files in os.walk(os.path.join(step_dir, "state")):
            for name in files:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
        with self.assertRaisesRegex(ckpt.CheckpointError, r"could not be"):
            train.run(_tiny_config(out, epochs=2), resume=True)


@pytest.mark.slow
class ModelsSlowTest(parameterized.TestCase):
    @parameterized.parameters("cnn", "resnet20")
    def test_conv_models_take_a_step(self, model_name):
        config = train.TrainConfig(model=model_name, method="bireal")
        model = train.build_model(config, 10)
        sample = jnp.zeros((2, 28, 28, 1), jnp.float32)
        tx = config.preset.optimizer(
            train.abstract_params(model, sample),
            make_optimizer=optax.adam,
            learning_rate=1e-3,
            real_learning_rate=1e-3,
        )
        state = train.init_state(model, tx, (0,), sample)
        step = train.make_train_step(model, tx)
        images = np.zeros((1, 2, 28, 28, 1), np.uint8)
        labels = np.zeros((1, 2), np.int32)
        _, metrics = step(state, images, labels, np.float32(0))
        self.assertTrue(np.isfinite(metrics["loss"][0]))


if __name__ == "__main__":
    absltest.main()
