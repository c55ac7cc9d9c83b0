"""What the CLI tells a user: flag errors, spelled-out flags, progress in logs."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized
from cli_helpers import run_cli

from bnnjax import _cli_train, cli, train


class FlagErrorTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("bad_value", ["train", "--epochs", "0"], "train", "--epochs"),
        ("bad_choice", ["train", "--model", "vgg"], "train", "--model"),
        (
            "unknown_flag",
            ["export", "run", "-o", "f", "--bogus"],
            "export",
            "--bogus",
        ),
        ("missing_flag", ["export", "run"], "export", "--output"),
        ("unknown_command", ["fly"], None, "fly"),
    )
    def test_one_line_and_a_pointer_to_help(self, argv, command, named):
        status, out, err = run_cli(argv)
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertLen(lines, 2, err)
        prog = f"bnnjax {command}" if command else "bnnjax"
        self.assertStartsWith(lines[0], f"{prog}: error: ")
        self.assertIn(named, lines[0])
        self.assertEqual(lines[1], f"(see `{prog} --help`)")
        self.assertNotIn("usage:", err)

    @parameterized.named_parameters(
        # compare has --seeds (a count); --seed is train's spelling.
        (
            "other_commands_flag",
            ["compare", "--seed", "3"],
            "compare",
            "--seed",
        ),
        ("prefix_of_a_flag", ["train", "--epoch", "3"], "train", "--epoch"),
        ("prefix_of_lr", ["train", "--real", "0.1"], "train", "--real"),
    )
    def test_flags_are_not_abbreviated(self, argv, command, named):
        status, _, err = run_cli(argv)
        self.assertEqual(status, 2)
        self.assertIn(f"bnnjax {command}: error: unrecognized arguments", err)
        self.assertIn(named, err)
        self.assertIn(f"(see `bnnjax {command} --help`)", err)

    def test_full_spelling_still_parses(self):
        parser = cli._build_parser(commands={"train"})
        args = parser.parse_args(["train", "--epochs", "3", "--real-lr", "0.1"])
        self.assertEqual(args.epochs, 3)
        self.assertEqual(args.real_lr, 0.1)

    def test_summary_takes_every_method_train_takes(self):
        from bnnjax import presets

        parser = cli._build_parser(commands={"summary", "train"})
        for method in presets.METHOD_NAMES:
            for command in ("train", "summary"):
                args = parser.parse_args([command, "--method", method])
                self.assertEqual(args.method, method, command)
        self.assertIn("sigmoid", presets.METHOD_NAMES)

    def test_every_command_has_a_description(self):
        parser = cli._build_parser()
        self.assertEqual(set(parser.commands), set(cli._COMMANDS))
        for name, sub in parser.commands.items():
            self.assertTrue(sub.description, name)
            self.assertIn(f"usage: bnnjax {name}", sub.format_help())


class ExportPathTest(absltest.TestCase):
    def test_a_directory_that_is_not_a_run(self):
        with tempfile.TemporaryDirectory() as tmp:
            output = os.path.join(tmp, "model.bnnjax")
            status, _, err = run_cli(["export", tmp, "-o", output])
            self.assertFalse(os.path.exists(output))
        self.assertEqual(status, 2)
        self.assertIn(f"{tmp} is not a bnnjax run directory", err)
        self.assertIn("no config.json", err)
        self.assertNotIn("Errno", err)
        self.assertLen(err.splitlines(), 1)

    def test_a_missing_path_and_a_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            output = os.path.join(tmp, "model.bnnjax")
            missing = os.path.join(tmp, "nope")
            status, _, err = run_cli(["export", missing, "-o", output])
            self.assertEqual(status, 2)
            self.assertIn(f"{missing} does not exist", err)
            a_file = os.path.join(tmp, "file.txt")
            with open(a_file, "w") as f:
                f.write("x")
            status, _, err2 = run_cli(["export", a_file, "-o", output])
            self.assertEqual(status, 2)
            self.assertIn(f"{a_file} is not a directory", err2)
        for text in (err, err2):
            self.assertIn("run directory", text)
            self.assertNotIn("Errno", text)


class ResumeMessageTest(absltest.TestCase):
    def test_a_resumed_run_says_so_and_a_new_one_does_not(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run")
            small = ["--hidden", "16", "--batch-size", "500", "--no-progress"]
            status, _, err = run_cli(
                ["train", *small, "--epochs", "1", "--out", out]
            )
            self.assertEqual(status, 0, err)
            self.assertNotIn("resuming", err)
            status, _, err = run_cli(
                ["train", "--resume", "--epochs", "2", "--out", out]
            )
            self.assertEqual(status, 0, err)
            self.assertIn(
                f"bnnjax train: resuming {out} from epoch 1 of 2", err
            )
            # From Python: on_start gets the epoch the run starts from.
            starts = []
            saved = train.TrainConfig.from_dict(
                {**_read_config(out), "epochs": 2}
            )
            train.run(
                saved, resume=True, on_start=starts.append, make_plots=False
            )
            self.assertEqual(starts, [2])


def _read_config(out):
    with open(os.path.join(out, "config.json")) as f:
        return json.load(f)


def _step(step, epoch):
    return train.StepInfo(
        step=step,
        total_steps=4,
        epoch=epoch,
        loss=0.5,
        accuracy=0.75,
    )


_RECORDS = [{"val_accuracy": 0.9, "flip_ratio": 0.01, "train_loss": 0.3}]


class ProgressTest(absltest.TestCase):
    def test_outside_a_terminal_one_line_per_epoch(self):
        progress = _cli_train._Progress(True, "run", terminal=False)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            for step in (1, 2):
                progress.on_step(_step(step, 1))
            progress.on_epoch(1, _RECORDS)
            progress.close()
        self.assertEqual(
            err.getvalue(),
            "epoch 1: train loss 0.3000, val accuracy 0.9000, "
            "flip ratio 1.00e-02\n",
        )

    def test_on_a_terminal_a_bar(self):
        progress = _cli_train._Progress(True, "run", terminal=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            progress.on_step(_step(1, 1))
            self.assertIsNotNone(progress._bar)
            progress.on_epoch(1, _RECORDS)
            progress.close()
        self.assertIn("epoch 1: train loss 0.3000", err.getvalue())
        self.assertIn("run", err.getvalue())  # the bar's description

    def test_disabled_writes_nothing(self):
        progress = _cli_train._Progress(False, "run", terminal=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            progress.on_step(_step(1, 1))
            progress.on_epoch(1, _RECORDS)
            progress.close()
        self.assertEqual(err.getvalue(), "")

    def test_a_run_logged_to_a_file_holds_no_bar_frames(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "train.log")
            with open(log, "w") as f:
                result = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import sys; from bnnjax import cli; "
                        "sys.exit(cli.main(sys.argv[1:]))",
                        "train",
                        "--epochs",
                        "2",
                        "--hidden",
                        "16",
                        "--out",
                        os.path.join(tmp, "run"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=f,
                    check=False,
                )
            with open(log) as f:
                lines = f.read().splitlines()
        self.assertEqual(result.returncode, 0, lines)
        self.assertLen(lines, 2, lines)
        self.assertStartsWith(lines[0], "epoch 1: train loss ")
        self.assertStartsWith(lines[1], "epoch 2: train loss ")


if __name__ == "__main__":
    absltest.main()
