# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Binarize, export, deploy
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/bnnjax/bnnjax/blob/main/notebooks/export_deploy.ipynb)
#
# From a float Flax model to 1-bit inference:
#
# 1. train an ordinary float MLP written with `flax.linen`;
# 2. convert it with `bnnjax.binarize_model` (no change to its code) and
#    fine-tune the binary model from the float weights;
# 3. export it to a packed file and run it from the packed words;
# 4. export a trained reference model to a packed file (`bnnjax export`,
#    `bnnjax.export.export_model`), run packed inference from the file
#    (`bnnjax.export.predict`) and compare sizes and predictions with the
#    float32 checkpoint.
#
# On Colab the first cell installs bnnjax from GitHub and the data is the
# full MNIST from TensorFlow Datasets; elsewhere (and with `BNNJAX_SMOKE=1`,
# the small mode CI runs) it uses the MNIST sample shipped in the package.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # install bnnjax on Colab only
    package = "bnnjax[data] @ git+https://github.com/bnnjax/bnnjax"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", package]
    subprocess.run(pip, check=True)

# %%
import os
import tempfile

import flax.linen as fnn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import bnnjax
import bnnjax.cli

# BNNJAX_SMOKE=1: tiny widths, one epoch, the embedded sample (CI runs this).
SMOKE = os.environ.get("BNNJAX_SMOKE") == "1"
ON_COLAB = "google.colab" in sys.modules
DATASET = "mnist" if ON_COLAB and not SMOKE else "mnist-sample"
try:  # on Colab, TFDS downloads and prepares MNIST once (about a minute)
    ds = bnnjax.data.load_dataset(DATASET)
except (ImportError, bnnjax.data.DatasetUnavailableError) as e:
    print(f"TFDS MNIST unavailable ({type(e).__name__}); using the sample")
    DATASET = "mnist-sample"
    ds = bnnjax.data.load_dataset(DATASET)
# Files go to a new folder under $BNNJAX_NOTEBOOK_DIR when it is set (kept);
# otherwise to a temporary folder that the last cell (or the kernel's exit)
# removes.
KEEP_DIR = os.environ.get("BNNJAX_NOTEBOOK_DIR")
if KEEP_DIR:
    os.makedirs(KEEP_DIR, exist_ok=True)
    work_tmp = None
    WORK = tempfile.mkdtemp(prefix="export-", dir=KEEP_DIR)
else:
    work_tmp = tempfile.TemporaryDirectory(prefix="bnnjax-export-")
    WORK = work_tmp.name
WIDTHS = (64, 128, 128) if SMOKE else (256, 1024, 1024)
EPOCHS = 1 if SMOKE else 5
train_split, val = bnnjax.data.split_validation(ds, fraction=0.1, seed=0)
print(
    f"bnnjax {bnnjax.__version__}, jax {jax.__version__}, "
    f"device {jax.devices()[0]}, {ds}, smoke={SMOKE}"
)

# %% [markdown]
# ## 1. A float model, written without bnnjax
#
# An ordinary linen MLP, trained with Adam for a few epochs. The training
# and evaluation helpers below work for any model with this call signature;
# they use bnnjax only to read the data (`bnnjax.data.iterate_batches`
# shuffles deterministically from `(seed, epoch)`).


# %%
class FloatMlp(fnn.Module):
    widths: tuple[int, ...]

    @fnn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for width in self.widths:
            x = fnn.relu(fnn.Dense(width)(x))
        return fnn.Dense(10)(x)


def fit(model, params, tx, epochs):
    """Trains ``params`` with ``tx``; returns them and the epoch losses."""

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, bnnjax.data.to_float(images))
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = tx.init(params), []
    for epoch in range(epochs):
        batch_losses = []
        for images, labels in bnnjax.data.iterate_batches(
            train_split.train_images,
            train_split.train_labels,
            batch_size=100,
            seed=0,
            epoch=epoch,
        ):
            params, opt_state, loss = step(params, opt_state, images, labels)
            batch_losses.append(loss)
        losses.append(float(np.mean(batch_losses)))
    return params, losses


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


float_model = FloatMlp(WIDTHS)
example = bnnjax.data.to_float(train_split.train_images[:2])
params = float_model.init(jax.random.key(0), example)["params"]
float_params, losses = fit(float_model, params, optax.adam(1e-3), EPOCHS)
val_images = bnnjax.data.to_float(val.images)
float_val = accuracy(
    float_model.apply({"params": float_params}, val_images), val.labels
)
print(
    f"float: losses {np.round(losses, 3)}, validation accuracy {float_val:.3f}"
)

# %% [markdown]
# ## 2. Convert it with `bnnjax.binarize_model` and fine-tune
#
# `binarize_model(model, example_input)` traces one abstract call to find
# the Dense/Conv layers in call order and, by default, binarizes every one
# except the first and the last (the usual practice: the first sees the
# pixels, the last produces the logits). The parameter tree stays the float
# model's, so the float weights are the starting point of fine-tuning. The
# converted model labels its binary kernels for the optimizer.

# %%
binary_model = bnnjax.binarize_model(FloatMlp(WIDTHS), example)
print("binarized layers:", sorted(binary_model.binarized_layers))
labels = binary_model.param_labels(float_params)
print(labels)
before = accuracy(
    binary_model.apply({"params": float_params}, val_images), val.labels
)
print(f"binary model with the float weights, before fine-tuning: {before:.3f}")

# %% [markdown]
# Fine-tune: the binary kernels get the founding method's optimizer
# (`scale_adaptive(adam)`: steps proportional to each channel's spread), the
# real layers plain Adam.

# %%
tx = bnnjax.binary_partition(
    bnnjax.scale_adaptive(optax.adam(1e-2)), optax.adam(1e-3), labels=labels
)
binary_params, losses = fit(binary_model, float_params, tx, EPOCHS)
binary_val = accuracy(
    binary_model.apply({"params": binary_params}, val_images), val.labels
)
print(
    f"fine-tuned: losses {np.round(losses, 3)}, "
    f"validation accuracy {binary_val:.3f} (float: {float_val:.3f})"
)
assert binary_val > before

# %% [markdown]
# The memory summary counts the converted kernels (still named `kernel`)
# as binary when given the labels: 1 bit each once deployed. The first and
# last layers stay real, at 32 bits per weight, so in a model this small
# they take most of the deployed bytes (the repository's
# `docs/guides/why_latent_weights.md` explains where the 32x saving appears
# and where it does not).

# %%
report = bnnjax.summary({"params": binary_params}, labels=labels)
print(report)

# %% [markdown]
# ## 3. Export the converted model and run it from packed bits
#
# `bnnjax.export.export_model` packs every binarized kernel 32 signs per
# `uint32` word along the input axis, with one scale per output channel,
# and stores the other variables as they are. A model of your own is stored
# without its code (the file never holds anything executable), so
# `bnnjax.export.predict` takes the model definition: here the original
# float `FloatMlp`, whose converted layers then run from the bits
# (`(x @ S) * alpha` with `S` rebuilt from the words, the float layer's own
# product).

# %%
own_file = os.path.join(WORK, "converted.bnnjax")
own_sizes = bnnjax.export.export_model(
    binary_model, {"params": binary_params}, own_file, example_inputs=example
)
own = bnnjax.export.load(own_file)  # checks magic, version and checksum
got = bnnjax.export.predict(own, val_images, model=FloatMlp(WIDTHS))
want = binary_model.apply({"params": binary_params}, val_images)
print("agreement of predictions:", accuracy(got, np.argmax(want, -1)))
print(
    "max |logit difference|:",
    float(jnp.max(jnp.abs(got - want))),
    "of max |logit|",
    float(jnp.max(jnp.abs(want))),
)
np.testing.assert_allclose(
    got, want, rtol=1e-5, atol=1e-5 * jnp.abs(want).max()
)
print(
    f"file: {own_sizes.file_bytes:,} bytes, float32 parameters: "
    f"{own_sizes.float32_bytes:,} bytes "
    f"({own_sizes.compression_ratio:.1f}x smaller; the real first and last "
    "layers dominate a model this small)"
)

# %% [markdown]
# ## 4. Export a reference model to a file and deploy it
#
# The reference architectures (`bnnjax.models.linen.BinaryMLP`,
# `BinaryNetCNN`, the Bi-Real ResNets; linen or nnx) export to one
# self-describing file: packed kernels, per-channel scales, real
# parameters, batch norm followed by `sign` folded into thresholds, and a
# small program that `bnnjax.export.predict` runs with no Flax module and
# no latent weights. First, train one with `bnnjax.train.run` (what
# `bnnjax train --out RUN_DIR` runs).

# %%
run_dir = os.path.join(WORK, "run")
settings = (
    {"hidden": (64,), "epochs": 1}
    if SMOKE
    else {"dataset": "mnist", "epochs": 10}
    if DATASET == "mnist"
    else {}  # the defaults: 784-512-512-10, 60 epochs on the sample
)
results = bnnjax.train.run(bnnjax.TrainConfig(**settings, out_dir=run_dir))
print({k: results[k] for k in ("dataset", "epochs", "test_accuracy")})

# %% [markdown]
# The command line: `bnnjax export RUN_DIR -o FILE` packs the run's last
# checkpoint and verifies the file against the float model on the run's
# test split; `bnnjax predict FILE` runs packed inference only. Both print
# one JSON line. (In a shell: `!bnnjax export ...`; here we call the same
# entry point from Python.)

# %%
model_file = os.path.join(WORK, "model.bnnjax")
status = bnnjax.cli.main(["export", run_dir, "-o", model_file])
assert status == 0, status
status = bnnjax.cli.main(["predict", model_file])
assert status == 0, status

# %% [markdown]
# The same from Python: load the checkpoint, export with
# `bnnjax.export.export_model`, load the file back and compare the packed
# model's predictions with the float model's on the whole test split.

# %%
model, state, info = bnnjax.train.load_checkpoint(run_dir)
variables = {  # seed 0: every leaf of the state has a leading seed axis
    "params": jax.tree.map(lambda a: a[0], state.params),
    "batch_stats": jax.tree.map(lambda a: a[0], state.batch_stats),
}
api_file = os.path.join(WORK, "api.bnnjax")
sizes = bnnjax.export.export_model(
    model, variables, api_file, metadata={"dataset": DATASET}
)
packed_model = bnnjax.export.load(api_file)
print(packed_model.architecture, dict(packed_model.metadata))

test_images = bnnjax.data.to_float(ds.test_images)
float_logits = model.apply(variables, test_images, train=False)
packed_logits = bnnjax.export.predict(
    packed_model, test_images, batch_size=1000
)
agreement = accuracy(packed_logits, np.argmax(float_logits, -1))
print(
    f"test accuracy: float {accuracy(float_logits, ds.test_labels):.4f}, "
    f"packed {accuracy(packed_logits, ds.test_labels):.4f}; "
    f"identical predictions: {agreement:.4f}; max |logit difference| "
    f"{float(jnp.max(jnp.abs(packed_logits - float_logits))):.2e}"
)
assert agreement == 1.0

# %% [markdown]
# ## Sizes
#
# The file against the float32 checkpoint (every parameter and batch-norm
# statistic at 32 bits) and against the summary's deploy bytes (1 bit per
# binary weight, 32 bits for the rest). The binary kernels alone shrink
# exactly 32x; the file also holds the real parameters, the JSON header and
# 64-byte alignment, so the whole model shrinks a little less.

# %%
report = bnnjax.summary(variables)
rows = {
    "float32 checkpoint": sizes.float32_bytes,
    "training (latent float32)": report.train_bytes,
    "deploy (summary)": report.deploy_bytes,
    "packed file": sizes.file_bytes,
}
for label, n in rows.items():
    print(f"{label:>26}: {n:>10,} bytes")
print(
    f"compression: {sizes.compression_ratio:.1f}x "
    f"(binary kernels: {report.binary_params:,} weights)"
)
assert sizes.file_bytes == os.path.getsize(api_file)

fig, ax = plt.subplots(figsize=(7, 2.5))
ax.barh(list(rows), [n / 1024 for n in rows.values()])
ax.set_xscale("log")
ax.set_xlabel("KiB (log scale)")
ax.set_title(
    f"{packed_model.architecture}: {sizes.compression_ratio:.1f}x smaller file"
)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Clean up
#
# The temporary folder goes; a folder under `$BNNJAX_NOTEBOOK_DIR` stays.

# %%
if work_tmp is not None:
    work_tmp.cleanup()
    assert not os.path.exists(WORK)
else:
    print("files kept in", WORK)
