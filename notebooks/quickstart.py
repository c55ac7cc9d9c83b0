# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # bnnjax quickstart
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/bnnjax/bnnjax/blob/main/notebooks/quickstart.ipynb)
#
# A binarized neural network (BNN) keeps its weights at `±alpha`, so each
# weight costs 1 bit instead of 32. This notebook walks through bnnjax from
# the bottom up:
#
# 1. binarize a tensor and look at the scale `alpha`;
# 2. plot each surrogate gradient (what `jax.grad` returns through
#    `bnnjax.binarize`) against the derivative of the smooth function it
#    imitates;
# 3. build a binary MLP with Flax, in linen and in nnx;
# 4. train it on MNIST with `bnnjax.train.run`;
# 5. read the memory summary: what training stores and what deployment needs.
#
# On Colab the first cell installs bnnjax from GitHub and the data is the
# full MNIST from TensorFlow Datasets; elsewhere (and with `BNNJAX_SMOKE=1`,
# the small mode CI runs) it uses the MNIST sample shipped in the package,
# so no network is needed.

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
from flax import nnx
from IPython.display import Image, display

import bnnjax
from bnnjax.nn import linen as bnn

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
    WORK = tempfile.mkdtemp(prefix="quickstart-", dir=KEEP_DIR)
else:
    work_tmp = tempfile.TemporaryDirectory(prefix="bnnjax-quickstart-")
    WORK = work_tmp.name
print(
    f"bnnjax {bnnjax.__version__}, jax {jax.__version__}, "
    f"device {jax.devices()[0]}, dataset {DATASET!r}, smoke={SMOKE}"
)

# %% [markdown]
# ## 1. Binarize a tensor
#
# `bnnjax.binarize(x)` returns `alpha * sign(x)` with `sign(0) = +1`. The
# default scale is the founding method's: `alpha` is the **mean absolute
# deviation** `mean(|x - mean(x)|)`. `axis=-1` keeps one `alpha` per output
# channel of a dense `(in, out)` kernel.

# %%
np.set_printoptions(precision=4, suppress=True)
w = 0.05 * jax.random.normal(jax.random.key(0), (6, 3))  # (in, out)
w = w.at[0, 0].set(0.0)  # sign(0) = +1
wb = bnnjax.binarize(w, axis=-1)
alpha = bnnjax.mean_abs_dev(w, bnnjax.reduce_axes(w.ndim, -1))
print("latent weights:\n", np.asarray(w))
print("binarized:\n", np.asarray(wb))
print("alpha per output channel:", np.asarray(alpha))
np.testing.assert_allclose(wb, alpha * jnp.where(w >= 0, 1.0, -1.0), rtol=1e-6)

# %% [markdown]
# Other rules are a name away: XNOR-Net's mean-absolute scale with the
# clipped straight-through estimator, or no scale at all.

# %%
print(bnnjax.binarize(w[:, 0], "clipped_ste", "mean_abs"))
print(bnnjax.binarize(w[:, 0], "ste", None))

# %% [markdown]
# ## 2. Surrogate gradients against the functions they imitate
#
# `sign` has zero gradient almost everywhere, so training borrows the
# derivative of a smooth *proxy* `P(x)` in the backward pass (a surrogate
# gradient). Below, for every binarizing surrogate, the solid line is
# `jax.grad` through `bnnjax.binarize` (scale `None`, so the gradient is the
# surrogate's alone) and the dots are `jax.grad` of the proxy itself; the
# dashed line is the proxy `P(x)`. They must agree wherever `P` is
# differentiable (the test suite checks it on a grid with the kinks and 0).

# %%
NAMES = bnnjax.SURROGATE_NAMES  # every registered binarizer (9)
x = jnp.linspace(-2.0, 2.0, 400)  # avoids the kinks at 0 and +-1
extra = {"progress": 0.5, "key": jax.random.key(1)}  # annealed / stochastic

fig, axes = plt.subplots(3, 3, figsize=(12, 9), sharex=True)
for name, ax in zip(NAMES, axes.flat, strict=True):
    s = bnnjax.get_surrogate(name)
    grad = jax.grad(
        lambda v, s=s: jnp.sum(bnnjax.binarize(v, s, None, **extra))
    )(x)
    aux = s.prepare(x, bnnjax.reduce_axes(x.ndim, None), **extra)
    proxy = s.proxy(x, aux)
    proxy_grad = jax.grad(lambda v, s=s, aux=aux: jnp.sum(s.proxy(v, aux)))(x)
    np.testing.assert_allclose(grad, proxy_grad, rtol=1e-5, atol=1e-5)
    ax.plot(x, grad, label="grad through binarize")
    ax.plot(x[::12], proxy_grad[::12], "o", ms=3, label="d proxy / dx")
    ax.plot(x, proxy, "--", label="proxy P(x)")
    if not s.stochastic:  # the forward pass: sign(x)
        forward = bnnjax.binarize(x, s, None, **extra)
        ax.plot(x, forward, color="0.6", lw=0.8, label="forward sign(x)")
    ax.set_title(name)
    ax.grid(alpha=0.3)
axes.flat[0].legend(fontsize=8)
fig.suptitle("forward: sign(x); backward: the derivative of a smooth proxy")
fig.tight_layout()
plt.show()

# %% [markdown]
# The founding method's scaled sigmoid sets its width from the tensor's own
# spread, and its scale is the mean absolute deviation, so the gradient does
# not depend on the weights' scale: at `c * v` it equals the gradient at `v`
# for every `c > 0`. A fixed window (the clipped STE with XNOR-Net's
# mean-absolute scale) gives a gradient that shrinks with `alpha` for small
# weights and reaches only the few weights inside `[-1, 1]` for large ones.

# %%
v = 0.05 * jax.random.normal(jax.random.key(2), (4096,))
g = jax.random.normal(jax.random.key(3), (4096,))  # an upstream gradient


def weight_grad(rule, c):
    """Gradient of sum(binarize(c * v) * g) with respect to c * v."""
    return jax.grad(lambda u: jnp.sum(rule(u) * g))(c * v)


founding = bnnjax.Binarizer()  # scaled sigmoid, mean-absolute-deviation scale
window = bnnjax.Binarizer(surrogate="clipped_ste", scale="mean_abs")
print(f"{'c':>8} {'scaled_sigmoid':>16} {'clipped_ste':>14}   (mean |grad|)")
for c in (1e-3, 1.0, 1e3):
    a = weight_grad(founding, c)
    b = weight_grad(window, c)
    print(
        f"{c:>8g} {float(jnp.abs(a).mean()):>16.4g} "
        f"{float(jnp.abs(b).mean()):>14.4g}"
    )
    np.testing.assert_allclose(a, weight_grad(founding, 1.0), rtol=1e-4)

# %% [markdown]
# ## 3. A binary MLP in Flax
#
# ### linen
#
# `bnnjax.nn.linen.BinaryDense` takes `flax.linen.Dense`'s arguments plus a
# `kernel_binarizer` (default: the founding method, one scale per output
# channel) and an optional `input_binarizer` for binary activations. Its
# parameter is `latent_kernel`: the float weights that training updates and
# the forward pass binarizes.


# %%
class Mlp(fnn.Module):
    @fnn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = bnn.BinaryDense(256, use_bias=False)(x)  # real inputs
        x = fnn.BatchNorm(use_running_average=not train)(x)
        sign = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
        return bnn.BinaryDense(10, input_binarizer=sign)(x)  # binary inputs


images = jnp.ones((2, 28, 28, 1))
variables = Mlp().init(jax.random.key(0), images)
print(jax.tree.map(jnp.shape, variables["params"]))
print(Mlp().apply(variables, images).shape)

# %% [markdown]
# The reference architectures are ready-made: `bnnjax.models.linen.BinaryMLP`
# is the BinaryConnect / BinaryNet MLP (binary dense, batch norm, then sign
# or ReLU). With `binary_activations=False` the weights are binary and the
# activations real (BinaryConnect).

# %%
HIDDEN = (64,) if SMOKE else (512, 512)
model = bnnjax.models.linen.BinaryMLP(hidden=HIDDEN, binary_activations=False)
variables = model.init(jax.random.key(0), images, train=False)
logits = model.apply(variables, images, train=False)
print(model.hidden, logits.shape, sorted(variables))

# %% [markdown]
# ### nnx
#
# The same model in `flax.nnx`, trained for one epoch by hand. Latent
# weights are `bnnjax.nn.nnx.LatentParam` variables, so
# `bnnjax.binary_partition` routes them to the binary optimizer by type:
# here the founding method's `scale_adaptive(adam)` (steps proportional to
# each channel's spread), and plain Adam for batch norm.

# %%
train_split, val = bnnjax.data.split_validation(ds, fraction=0.1, seed=0)
print(ds, "validation:", val.images.shape)

nnx_model = bnnjax.models.nnx.BinaryMLP(
    hidden=HIDDEN, binary_activations=False, rngs=nnx.Rngs(0)
)
tx = bnnjax.binary_partition(
    bnnjax.scale_adaptive(optax.adam(3e-2)), optax.adam(1e-3), nnx_model
)
optimizer = nnx.Optimizer(nnx_model, tx, wrt=nnx.Param)


@nnx.jit
def nnx_step(model, optimizer, images, labels):
    def loss_fn(model):
        logits = model(bnnjax.data.to_float(images))
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, labels
        ).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


nnx_model.train()
losses = [
    float(nnx_step(nnx_model, optimizer, x, y))
    for x, y in bnnjax.data.iterate_batches(
        train_split.train_images,
        train_split.train_labels,
        batch_size=100,
        seed=0,
        epoch=0,
    )
]
nnx_model.eval()
val_logits = nnx_model(bnnjax.data.to_float(val.images))
val_accuracy = float(jnp.mean(jnp.argmax(val_logits, -1) == val.labels))
print(
    f"{len(losses)} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
    f"validation accuracy {val_accuracy:.3f}"
)
assert losses[-1] < losses[0]

# %% [markdown]
# ## 4. Train on MNIST with `bnnjax.train.run`
#
# `bnnjax.train.run(bnnjax.TrainConfig(...))` is what the `bnnjax train`
# command runs: it holds out a validation split, trains (several seeds at
# once if asked), writes checkpoints, `metrics.jsonl` and plots to a run
# directory, evaluates the test split once at the end and returns a
# JSON-ready dict. The defaults are the founding method on a 784-512-512-10
# MLP with binary weights and real activations (60 epochs on the embedded
# sample: about 30 s on 2 CPU cores, about 96% test accuracy).

# %%
if SMOKE:
    settings = {"hidden": HIDDEN, "epochs": 1}
elif DATASET == "mnist":  # 54,000 training digits: fewer epochs
    settings = {"dataset": "mnist", "epochs": 10}
else:
    settings = {}  # the defaults: 60 epochs on the sample
config = bnnjax.TrainConfig(**settings, out_dir=os.path.join(WORK, "run"))
print(config)
results = bnnjax.train.run(config)
print(
    {
        k: results[k]
        for k in (
            "method",
            "dataset",
            "epochs",
            "test_accuracy",
            "val_accuracy",
            "train_seconds",
            "examples_per_second",
            "binary_params",
            "packed_bytes",
        )
    }
)
assert results["test_accuracy"] > (0.5 if SMOKE else 0.9)

# %% [markdown]
# The run directory holds the learning curves, the fraction of binary
# weights that flip sign per epoch, and histograms of the latent weights.

# %%
print(sorted(os.listdir(results["out_dir"])))
for path in results["plots"]:
    display(Image(filename=path, width=700))

# %% [markdown]
# ## 5. The memory summary
#
# `bnnjax.summary` counts, per tensor, what training stores (the float32
# latent weights) and what deployment needs (1 bit per binary weight, plus
# the real parameters: per-channel scales, batch norm, real layers). Load
# the trained model from its checkpoint and summarize it.

# %%
model, state, info = bnnjax.train.load_checkpoint(results["out_dir"])
trained = {  # seed 0: every leaf of the state has a leading seed axis
    "params": jax.tree.map(lambda a: a[0], state.params),
    "batch_stats": jax.tree.map(lambda a: a[0], state.batch_stats),
}
report = bnnjax.summary(trained)
print(report)
assert report.binary_params == results["binary_params"]

# %% [markdown]
# The binary weights shrink 32x; the whole model a little less, because the
# per-channel scales and batch-norm statistics stay at 32 bits. The
# companion notebook `export_deploy.ipynb` writes these bits to a file and
# runs inference from it, and `docs/guides/why_latent_weights.md` explains why
# training still needs the float latent weights.

# %%
test_logits = model.apply(
    trained, bnnjax.data.to_float(ds.test_images[:8]), train=False
)
print("predicted:", np.asarray(jnp.argmax(test_logits, -1)))
print("label:    ", ds.test_labels[:8])

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
