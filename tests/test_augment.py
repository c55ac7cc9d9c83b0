"""Tests for augmentation on the device and the ``augment``/``width``
settings (``bnnjax.training.augment``, ``TrainConfig``, ``bnnjax train``).
"""

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from cli_helpers import run_cli

from bnnjax import checkpoint as ckpt
from bnnjax import data, distributed, train
from bnnjax.training import augment
from bnnjax.training import step as step_lib

PAD = augment.CROP_PAD


def _images(n=6, h=8, w=8, c=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    # Nonzero pixels, so a zero can only come from the padding.
    x = rng.integers(1, 256, (n, h, w, c))
    return x.astype(dtype)


def _padded(x, pad):
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _candidates(x, pad, flips):
    """Every crop of ``x`` padded by ``pad`` (and its mirror): (B, K, ...)."""
    h, w = x.shape[1:3]
    xp = _padded(x, pad)
    out = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = xp[:, oy : oy + h, ox : ox + w]
            out.append(crop)
            if flips:
                out.append(crop[:, :, ::-1])
    return np.stack(out, axis=1)


def _which(out, candidates):
    """For each image, the indices of the candidates it equals."""
    return [
        [k for k in range(candidates.shape[1]) if np.array_equal(o, c[k])]
        for o, c in zip(out, candidates, strict=True)
    ]


class TranslateTest(parameterized.TestCase):
    def test_crop_of_a_known_image_is_the_slice_of_the_padded_image(self):
        x = _images()
        xp = _padded(x, PAD)
        oy = np.array([0, 8, 4, 3, 5, 1])
        ox = np.array([8, 0, 4, 6, 2, 7])
        got = np.asarray(augment.translate(x, oy - PAD, ox - PAD))
        for b in range(len(x)):
            want = xp[b, oy[b] : oy[b] + 8, ox[b] : ox[b] + 8]
            np.testing.assert_array_equal(got[b], want)

    def test_flip_is_the_mirror_of_the_crop(self):
        x = _images()
        dy = np.array([0, 1, -2, 3, 0, -4])
        dx = np.array([0, -1, 2, 4, -4, 1])
        flip = np.array([True, True, False, True, False, True])
        shifted = np.asarray(augment.translate(x, dy, dx))
        got = np.asarray(augment.translate(x, dy, dx, flip))
        for b in range(len(x)):
            want = shifted[b, :, ::-1] if flip[b] else shifted[b]
            np.testing.assert_array_equal(got[b], want)
        # No shift and a mirror: exactly x[:, :, ::-1].
        mirrored = augment.translate(
            x, np.zeros(6, int), np.zeros(6, int), [1] * 6
        )
        np.testing.assert_array_equal(mirrored, x[:, :, ::-1])

    def test_zero_offsets_are_the_identity_and_far_ones_all_zeros(self):
        x = _images()
        zero = np.zeros(len(x), int)
        np.testing.assert_array_equal(augment.translate(x, zero, zero), x)
        far = np.full(len(x), 8)
        self.assertEqual(int(np.abs(augment.translate(x, far, zero)).sum()), 0)

    @parameterized.parameters(np.uint8, np.float32, jnp.bfloat16)
    def test_dtype_and_shape_are_kept(self, dtype):
        x = jnp.asarray(_images(dtype=np.float32)).astype(dtype)
        key = augment.augment_key(0, 0)
        for fn in (augment.crop_flip, augment.shift):
            out = fn(key, x)
            self.assertEqual(out.dtype, x.dtype)
            self.assertEqual(out.shape, x.shape)

    def test_not_a_batch(self):
        with self.assertRaisesRegex(ValueError, r"\(B, H, W, C\).*\(8, 8\)"):
            augment.translate(np.zeros((8, 8)), [0], [0])
        with self.assertRaisesRegex(ValueError, "pad=-1"):
            augment.crop_flip(augment.augment_key(0, 0), _images(), pad=-1)


class RandomAugmentTest(parameterized.TestCase):
    def test_crop_flip_is_a_crop_of_the_padded_image_or_its_mirror(self):
        x = _images(n=64)
        out = np.asarray(augment.crop_flip(augment.augment_key(3, 7), x))
        matches = _which(out, _candidates(x, PAD, flips=True))
        self.assertTrue(all(matches), "an output is no crop or mirror")
        # Both flips and several positions occur in 64 draws.
        flipped = {m[0] % 2 for m in matches}
        self.assertEqual(flipped, {0, 1})
        self.assertGreater(len({m[0] // 2 for m in matches}), 10)

    def test_shift_stays_within_two_pixels_and_never_mirrors(self):
        x = _images(n=64, h=12, w=12, c=1)
        out = np.asarray(augment.shift(augment.augment_key(0, 1), x))
        m = augment.MAX_SHIFT
        matches = _which(out, _candidates(x, m, flips=False))
        self.assertTrue(all(matches), "a shift beyond 2 pixels, or a mirror")
        corners = {0, 2 * m, (2 * m + 1) * 2 * m, (2 * m + 1) ** 2 - 1}
        self.assertTrue(corners & {k[0] for k in matches})

    def test_a_function_of_seed_and_step_only(self):
        x = _images(n=16)
        fn = jax.jit(augment.crop_flip)

        def draw(seed, step):
            return np.asarray(fn(augment.augment_key(seed, step), x))

        np.testing.assert_array_equal(draw(1, 5), draw(1, 5))
        eager = augment.crop_flip(augment.augment_key(1, 5), x)
        np.testing.assert_array_equal(draw(1, 5), eager)  # jit == eager
        self.assertFalse(np.array_equal(draw(1, 5), draw(1, 6)))
        self.assertFalse(np.array_equal(draw(1, 5), draw(2, 5)))

    def test_seeds_under_vmap_differ_and_match_each_seed_alone(self):
        x = _images(n=16)

        def one(seed, images):
            return augment.crop_flip(augment.augment_key(seed, 4), images)

        seeds = jnp.asarray([0, 1], jnp.uint32)
        out = np.asarray(jax.jit(jax.vmap(one))(seeds, jnp.stack([x, x])))
        self.assertFalse(np.array_equal(out[0], out[1]))
        for i in range(2):
            np.testing.assert_array_equal(out[i], one(int(seeds[i]), x))

    def test_get_augmentation(self):
        self.assertIsNone(augment.get_augmentation("none"))
        key, x = augment.augment_key(0, 0), _images()
        for name, fn in (
            ("crop_flip", augment.crop_flip),
            ("shift", augment.shift),
        ):
            np.testing.assert_array_equal(
                augment.get_augmentation(name)(key, x), fn(key, x)
            )
        with self.assertRaisesRegex(ValueError, r"'flip'.*'crop_flip'"):
            augment.get_augmentation("flip")


def _setup(seeds):
    config = train.TrainConfig(hidden=(16,), seeds=seeds)
    model = train.build_model(config, 10)
    sample = jnp.zeros((1, 8, 8, 3), jnp.float32)
    lr, real_lr = config.learning_rates()
    tx = config.preset.optimizer(
        train.abstract_params(model, sample),
        make_optimizer=config.make_optimizer,
        learning_rate=lr,
        real_learning_rate=real_lr,
    )
    return model, tx, train.init_state(model, tx, seeds, sample)


def _leaves(tree):
    return [np.asarray(v) for v in jax.tree.leaves(tree)]


class TrainStepTest(absltest.TestCase):
    def test_step_augments_by_seed_and_index(self):
        model, tx, state = _setup((0, 1))
        x = np.stack([_images(n=32), _images(n=32)])
        y = np.zeros((2, 32), np.int32)
        p = np.float32(0)
        plain = train.make_train_step(model, tx)
        step = train.make_train_step(
            model, tx, augment=augment.crop_flip, seeds=(0, 1)
        )
        _, m_plain = plain(state, x, y, p)
        _, m_a = step(state, x, y, p, np.int32(3))
        _, m_b = step(state, x, y, p, np.int32(3))
        _, m_c = step(state, x, y, p, np.int32(4))
        np.testing.assert_array_equal(m_a["loss"], m_b["loss"])
        self.assertFalse(np.array_equal(m_a["loss"], m_plain["loss"]))
        self.assertFalse(np.array_equal(m_a["loss"], m_c["loss"]))
        # Same images, same initial state per seed: only the draws differ.
        alone = train.make_train_step(
            model, tx, augment=augment.crop_flip, seeds=(1,)
        )
        one = jax.tree.map(lambda v: v[1:], state)
        _, m_one = alone(one, x[1:], y[1:], p, np.int32(3))
        np.testing.assert_allclose(m_one["loss"], m_a["loss"][1:], rtol=1e-6)

    def test_mesh_step_equals_the_plain_one(self):
        model, tx, state = _setup((0, 1))
        mesh = distributed.data_mesh(1)
        meshed = train.init_state(
            model, tx, (0, 1), jnp.zeros((1, 8, 8, 3)), mesh=mesh
        )
        x = np.stack([_images(n=16), _images(n=16, seed=1)])
        y = np.zeros((2, 16), np.int32)
        kwargs = dict(augment=augment.crop_flip, seeds=(0, 1))
        plain = train.make_train_step(model, tx, **kwargs)
        sharded = train.make_train_step(model, tx, mesh=mesh, **kwargs)
        for i in range(2):
            args = (x, y, np.float32(0), np.int32(i))
            state, _ = plain(state, *args)
            meshed, _ = sharded(meshed, *args)
        for a, b in zip(_leaves(state), _leaves(meshed), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    def test_augment_needs_seeds(self):
        model, tx, _ = _setup((0,))
        with self.assertRaisesRegex(ValueError, "needs seeds="):
            train.make_train_step(model, tx, augment=augment.shift)


class ConfigTest(parameterized.TestCase):
    @parameterized.parameters(
        ("mlp", "mnist-sample", "none"),
        ("mlp", "cifar:/data", "none"),
        ("mlp", "cifar10", "none"),
        ("cnn", "mnist-sample", "shift"),
        ("cnn", "idx:/data/mnist", "shift"),
        ("resnet20", "fashion_mnist", "shift"),
        ("cnn", "emnist/balanced", "shift"),
        ("cnn", "cifar:/data", "crop_flip"),
        ("resnet20", "cifar10", "crop_flip"),
        ("resnet18", "cifar100:3.0.2", "crop_flip"),
        ("cnn", "svhn_cropped", "none"),
    )
    def test_default_per_model_and_dataset(self, model, dataset, want):
        config = train.TrainConfig(model=model, dataset=dataset)
        self.assertEqual(config.augmentation, want)
        self.assertEqual(config.defaults()["augment"], want)
        self.assertEqual(config.resolved().augment, want)
        if want == "none":
            self.assertIsNone(config.make_augmentation())

    def test_explicit_value_wins_and_is_no_default(self):
        config = train.TrainConfig(augment="crop_flip")  # mlp may augment
        self.assertEqual(config.augmentation, "crop_flip")
        self.assertNotIn("augment", config.defaults())
        config = train.TrainConfig(model="cnn", augment="none")
        self.assertIsNone(config.make_augmentation())

    @parameterized.named_parameters(
        ("augment", dict(augment="flip"), r"augment='flip'.*'crop_flip'"),
        ("zero", dict(model="cnn", width=0), r"width=0; expected"),
        ("negative", dict(model="cnn", width=-1.0), r"width=-1.0"),
        ("nan", dict(model="cnn", width=float("nan")), r"width=nan"),
        ("text", dict(model="cnn", width="2"), r"width='2'"),
        ("bool", dict(model="cnn", width=True), r"width=True"),
        ("mlp", dict(width=0.5), r"width=0.5 with model='mlp'.*--hidden"),
    )
    def test_invalid(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            train.TrainConfig(**kwargs)

    def test_width_reaches_the_model(self):
        self.assertEqual(train.TrainConfig(width=1).width, 1.0)
        for model in ("cnn", "resnet20", "resnet18"):
            config = train.TrainConfig(model=model, width=2)
            self.assertIsInstance(config.width, float)
            net = config.make_model(10)
            self.assertEqual(net.width_multiplier, 2.0)

    def test_record_and_read_back(self):
        config = train.TrainConfig(model="cnn")
        record = json.loads(json.dumps(config.to_dict(resolved=True)))
        self.assertEqual(record["augment"], "shift")
        self.assertEqual(record["defaults"]["augment"], "shift")
        self.assertEqual(record["width"], 1.0)
        again = train.TrainConfig.from_dict(record)
        self.assertEqual(again.resolved(), config.resolved())
        # A config.json from before augmentation: that run did not augment.
        del record["augment"], record["defaults"]["augment"]
        self.assertEqual(
            train.TrainConfig.from_dict(record).augmentation, "none"
        )


def _write_cifar(directory, per_file=20):
    """CIFAR-10 binary files, labels 0..9 in turn."""
    os.makedirs(directory)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + [
        "test_batch.bin"
    ]:
        records = rng.integers(0, 256, (per_file, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(per_file) % 10
        with open(os.path.join(directory, name), "wb") as f:
            f.write(records.tobytes())


class CliTest(absltest.TestCase):
    """A tiny convolutional run through ``bnnjax train``."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.spec = "cifar:" + os.path.join(cls.tmp, "cifar")
        _write_cifar(os.path.join(cls.tmp, "cifar"))
        cls.out_dir = os.path.join(cls.tmp, "run")
        flags = ["--dataset", cls.spec, "--model", "cnn", "--width", "0.0625"]
        # 80 training, 20 validation and 20 test examples: the validation
        # and test splits share one compiled evaluation step.
        flags += ["--val-fraction", "0.2", "--batch-size", "40"]
        flags += ["--epochs", "1", "--no-progress"]
        cls.status, out, cls.err = run_cli(
            ["train", *flags, "--out", cls.out_dir]
        )
        cls.result = json.loads(out) if cls.status == 0 else None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_conv_run_records_the_resolved_augmentation(self):
        self.assertEqual(self.status, 0, self.err)
        with open(os.path.join(self.out_dir, ckpt.CONFIG_FILE)) as f:
            saved = json.load(f)
        self.assertEqual(saved["augment"], "crop_flip")
        self.assertEqual(saved["defaults"]["augment"], "crop_flip")
        self.assertEqual(saved["width"], 0.0625)
        self.assertEqual(self.result["steps"], 2)

    def test_evaluation_does_not_augment(self):
        self.assertEqual(self.status, 0, self.err)
        model, state, _ = train.load_checkpoint(self.out_dir)
        dataset = data.load_dataset(self.spec)
        result = step_lib.evaluate_counts(
            train.make_eval_step(model),
            state,
            dataset.test_images,
            dataset.test_labels,
            batch_size=1000,
        )
        self.assertEqual(
            int(result.correct[0]), self.result["test_correct_per_seed"][0]
        )

    def test_resume_compares_the_augmentation(self):
        self.assertEqual(self.status, 0, self.err)
        status, out, err = run_cli(
            ["train", "--resume", "--out", self.out_dir, "--augment", "none"]
        )
        self.assertEqual((status, out), (1, ""), err)
        self.assertIn("augment='crop_flip' (now 'none')", err)

    def test_flags(self):
        status, out, _ = run_cli(["train", "--help"])
        self.assertEqual(status, 0)
        text = " ".join(out.split())
        self.assertIn("--augment {none,crop_flip,shift}", text)
        self.assertIn("instead (default: 1.0)", text)
        self.assertIn("(default: none for mlp;", text)
        for argv, message, lines in (
            (["--augment", "flip"], "invalid choice: 'flip'", 2),
            (["--width", "0"], "expected a finite positive number", 2),
            (["--width", "0.5"], "model='mlp'; the MLP's widths are set", 1),
        ):
            status, out, err = run_cli(["train", *argv])
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn(message, err)
            self.assertLen(err.strip().splitlines(), lines, err)


if __name__ == "__main__":
    absltest.main()
