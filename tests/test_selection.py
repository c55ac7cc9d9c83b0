"""Tests for model selection on the validation split (select="best_val")."""

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from bnnjax import checkpoint as ckpt
from bnnjax import data, train
from bnnjax.training import selection as selection_lib
from bnnjax.training.step import TrainState

# 3 epochs of 27 steps on the embedded MNIST sample, two seeds.
TINY = dict(
    hidden=(32,), epochs=3, batch_size=200, val_fraction=0.1, seeds=(0, 1)
)
STEPS_PER_EPOCH = 27


def _state(values):
    """A state whose single parameter holds ``values[s]`` for seed ``s``."""
    params = {"w": jnp.asarray(values, jnp.float32)[:, None] * jnp.ones((1, 3))}
    return TrainState(params=params, batch_stats={}, opt_state=())


def _spoil_last_epoch(step, state):
    """Zeroes every parameter before the third epoch: its accuracy falls
    to chance, so the selection must come from an earlier epoch."""
    if step == 2 * STEPS_PER_EPOCH:
        params = jax.tree.map(jnp.zeros_like, state.params)
        return state._replace(params=params)
    return state


class UpdateSelectionTest(absltest.TestCase):
    def test_each_seed_keeps_its_earliest_best_epoch(self):
        sel = selection_lib.update_selection(None, _state([1, 2]), [5, 7], 1)
        self.assertEqual((sel.correct, sel.epoch), ((5, 7), (1, 1)))
        # Seed 0 improves, seed 1 ties: a tie keeps the earlier epoch.
        sel = selection_lib.update_selection(sel, _state([3, 4]), [6, 7], 2)
        self.assertEqual((sel.correct, sel.epoch), ((6, 7), (2, 1)))
        np.testing.assert_array_equal(
            sel.variables["params"]["w"][:, 0], [3.0, 2.0]
        )
        # Nothing improves: the same selection comes back.
        same = selection_lib.update_selection(sel, _state([9, 9]), [1, 1], 3)
        self.assertIs(same, sel)

    def test_selection_does_not_alias_the_state(self):
        state = _state([1, 2])
        sel = selection_lib.update_selection(None, state, [1, 1], 1)
        # The next training step may donate the state's buffers.
        state.params["w"].delete()
        np.testing.assert_array_equal(
            sel.variables["params"]["w"][:, 0], [1.0, 2.0]
        )

    def test_selected_state_replaces_parameters_and_stats_only(self):
        state = _state([1, 2])._replace(opt_state=(jnp.ones(2),))
        sel = selection_lib.update_selection(None, _state([7, 8]), [1, 1], 1)
        got = selection_lib.selected_state(state, sel)
        np.testing.assert_array_equal(got.params["w"][:, 0], [7.0, 8.0])
        self.assertIs(got.opt_state, state.opt_state)
        self.assertIs(selection_lib.selected_state(state, None), state)

    def test_count_mismatch_is_refused(self):
        sel = selection_lib.update_selection(None, _state([1, 2]), [1, 1], 1)
        with self.assertRaisesRegex(ValueError, "3 validation counts.*2 seeds"):
            selection_lib.update_selection(sel, _state([1, 2]), [1, 1, 1], 2)


class CheckpointExtraTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

    def test_extra_items_round_trip_beside_the_state(self):
        state = {"a": jnp.arange(3.0)}
        best = {"b": jnp.full((2, 2), 4, jnp.int32)}
        with ckpt.Checkpointer(self.dir) as c:
            c.save(1, state, {"k": 1}, extra={"best": best})
            got, info = c.restore(state)
            got_best, _ = c.restore(best, item="best")
        np.testing.assert_array_equal(got["a"], state["a"])
        np.testing.assert_array_equal(got_best["b"], best["b"])
        self.assertEqual(info["k"], 1)
        self.assertEqual(info["extra"]["best"]["paths"], ["['b']"])

    def test_missing_or_mismatched_extra_item_is_named(self):
        state = {"a": jnp.arange(3.0)}
        with ckpt.Checkpointer(self.dir) as c:
            c.save(1, state)
            with self.assertRaisesRegex(
                ckpt.CheckpointError, "holds no 'best' item"
            ):
                c.restore(state, item="best")
            c.save(2, state, extra={"best": state})
            with self.assertRaisesRegex(ckpt.CheckpointError, "does not match"):
                c.restore({"a": jnp.arange(4.0)}, item="best")

    def test_reserved_item_names_are_refused(self):
        with ckpt.Checkpointer(self.dir) as c:
            for name in ("state", "meta"):
                with self.assertRaisesRegex(ValueError, "taken by"):
                    c.save(1, {"a": jnp.zeros(1)}, extra={name: {}})


class BestValRunTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _config(self, name, **overrides):
        return train.TrainConfig(
            **{
                **TINY,
                "out_dir": os.path.join(self.tmp, name),
                "select": "best_val",
                "max_to_keep": 5,
                **overrides,
            }
        )

    def test_ends_with_the_best_epoch_and_loads_it(self):
        config = self._config("best")
        result = train.run(
            config, before_step=_spoil_last_epoch, make_plots=False
        )
        selected = result["selected_epoch_per_seed"]
        self.assertEqual(result["select"], "best_val")
        self.assertEqual(selected, result["best_val_epoch_per_seed"])
        self.assertNotIn(3, selected)  # the spoiled epoch is never chosen
        self.assertEqual(
            result["val_accuracy_per_seed"],
            result["best_val_accuracy_per_seed"],
        )
        self.assertGreater(min(result["test_accuracy_per_seed"]), 0.5)

        model, state, info = train.load_checkpoint(config.out_dir)
        self.assertEqual(info["epoch"], 3)
        self.assertEqual(info["selected_epoch_per_seed"], selected)
        # Each seed's loaded parameters are that seed's at its epoch.
        with ckpt.Checkpointer(
            os.path.join(config.out_dir, ckpt.CHECKPOINT_DIR)
        ) as c:
            for i, epoch in enumerate(selected):
                at_epoch, _ = c.restore(state, epoch)
                jax.tree.map(
                    lambda a, b, i=i: np.testing.assert_array_equal(a[i], b[i]),
                    (state.params, state.batch_stats),
                    (at_epoch.params, at_epoch.batch_stats),
                )
        # The test result was measured on exactly these parameters.
        ds = data.load_dataset("mnist-sample")
        logits = jax.vmap(
            lambda p, s: model.apply(
                {"params": p, "batch_stats": s},
                data.to_float(ds.test_images),
                train=False,
                progress=jnp.float32(1.0),
            )
        )(state.params, state.batch_stats)
        correct = (np.argmax(np.asarray(logits), -1) == ds.test_labels).sum(-1)
        self.assertEqual(correct.tolist(), result["test_correct_per_seed"])

    def test_resume_selects_the_same_epochs_and_parameters(self):
        whole = train.run(
            self._config("whole"),
            before_step=_spoil_last_epoch,
            make_plots=False,
        )
        split = self._config("split")

        class Stop(Exception):
            pass

        def stop_after_second_epoch(epoch, records):
            if epoch == 2:
                raise Stop

        with self.assertRaises(Stop):
            train.run(
                split,
                before_step=_spoil_last_epoch,
                on_epoch=stop_after_second_epoch,
                make_plots=False,
            )
        resumed = train.run(
            split, resume=True, before_step=_spoil_last_epoch, make_plots=False
        )
        for key in (
            "selected_epoch_per_seed",
            "test_correct_per_seed",
            "val_correct_per_seed",
        ):
            self.assertEqual(resumed[key], whole[key], key)
        _, a, _ = train.load_checkpoint(os.path.join(self.tmp, "whole"))
        _, b, _ = train.load_checkpoint(split.out_dir)
        jax.tree.map(np.testing.assert_array_equal, a, b)

    def test_last_is_the_default_and_saves_no_selection(self):
        config = self._config("last", select="last", epochs=1)
        result = train.run(config, make_plots=False)
        self.assertEqual(result["select"], "last")
        self.assertEqual(result["selected_epoch_per_seed"], [1, 1])
        self.assertEqual(train.TrainConfig().select, "last")
        with ckpt.Checkpointer(
            os.path.join(config.out_dir, ckpt.CHECKPOINT_DIR)
        ) as c:
            self.assertNotIn("extra", c.info())

    def test_unknown_select_is_refused(self):
        with self.assertRaisesRegex(ValueError, "select='best'.*best_val"):
            train.TrainConfig(select="best")


if __name__ == "__main__":
    absltest.main()
