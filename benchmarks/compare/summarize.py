"""Markdown tables of recorded comparisons, with differences to a baseline.

Usage::

    python benchmarks/compare/summarize.py DIR [DIR...] \
        [--baseline scaled_sigmoid]

Reads each directory's ``results.jsonl`` (one line per method, written by
``bnnjax compare --out``) and prints one Markdown table: test accuracy
(mean ± sample std over seeds), the difference to the baseline method with
Welch's t statistic (|t| above about 2.8 is needed for p < 0.05 with 3
seeds per side), last-epoch validation accuracy, the chosen learning rate
and options, and the epochs to the target validation accuracy.
"""

import argparse
import json
import math
import os


def _load(directory):
    with open(os.path.join(directory, "results.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _welch(a, b):
    """Difference of means and Welch's t (None with fewer than 2 seeds)."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return ma - mb, None
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se = math.sqrt(va / len(a) + vb / len(b))
    return ma - mb, (ma - mb) / se if se > 0 else None


def _options(line):
    text = f"{line['learning_rate']:g}"
    for key, value in line["options"].items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, float):
            value = f"{value:g}"
        text += f", {key}={value}"
    return text + (" (edge)" if line["at_grid_edge"] else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+")
    parser.add_argument("--baseline", default="scaled_sigmoid")
    args = parser.parse_args()
    lines = [line for d in args.directories for line in _load(d)]
    base = next((x for x in lines if x["method"] == args.baseline), None)
    if base is None:
        parser.error(
            f"no method {args.baseline!r} in these results; methods: "
            f"{[x['method'] for x in lines]}"
        )
    target = 100 * lines[0]["target_accuracy"]
    print(
        f"| method | test accuracy | vs {args.baseline} (Welch t) | val "
        f"accuracy | lr, options | epochs to {target:g}% val |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for x in lines:
        test = [100 * v for v in x["test_accuracy_per_seed"]]
        diff, t = _welch(
            test, [100 * v for v in base["test_accuracy_per_seed"]]
        )
        std = x["test_accuracy_std"]
        vs = "—" if x is base else f"{diff:+.2f} ({t:+.1f})"
        epochs = x["epochs_to_target_mean"]
        reach = (
            f"{epochs:.1f} ({x['reached']}/{len(x['seeds'])})"
            if epochs is not None
            else f"not reached (0/{len(x['seeds'])})"
        )
        print(
            f"| {x['method']} | {100 * x['test_accuracy_mean']:.2f} ± "
            f"{100 * std:.2f} | {vs} | {100 * x['val_accuracy_mean']:.2f} | "
            f"{_options(x)} | {reach} |"
        )


if __name__ == "__main__":
    main()
