"""The BNN MLP in Larq (Keras 2 / tf-keras): same network, batch, optimizer.

784-H-...-10 MLP, no biases, ``BatchNormalization`` (momentum 0.9,
epsilon 1e-4) after every layer, Adam (lr 1e-3) on every parameter,
softmax cross-entropy, ``uint8`` images scaled to ``[0, 1]`` inside the
step, which is a ``tf.function`` (``jit_compile=True`` with
``--compile``), as Keras' ``fit`` builds it. Variants:

* ``float``: ``Dense`` + BN + ReLU;
* ``binary_weights``: ``larq.layers.QuantDense(kernel_quantizer=
  "ste_sign")`` (``sign`` with the clipped straight-through gradient
  ``1{|W| <= 1}``), ReLU activations;
* ``binary_all``: also ``input_quantizer="ste_sign"`` on every layer after
  the first (BinaryNet; no ReLU).

No latent-weight clipping (``kernel_constraint``), as in bnnjax's matching
configuration. Larq needs Keras 2: install ``larq tensorflow-cpu
tf-keras`` and run with ``TF_USE_LEGACY_KERAS=1`` (set here before
TensorFlow is imported).

Prints one JSON line with every timed step (``--steps``, after
``--warmup`` steps).

Usage (in an environment with larq):
  python benchmarks/peers/larq_mlp.py --variant binary_all --steps 100
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq as lq
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common


def build(kind: str, hidden) -> tf.keras.Model:
    layers = [tf.keras.layers.Flatten(input_shape=(28, 28, 1))]
    for i, width in enumerate([*hidden, 10]):
        if kind == "float":
            layers.append(tf.keras.layers.Dense(width, use_bias=False))
        else:
            binary_inputs = kind == "binary_all" and i > 0
            layers.append(
                lq.layers.QuantDense(
                    width,
                    input_quantizer="ste_sign" if binary_inputs else None,
                    kernel_quantizer="ste_sign",
                    kernel_constraint=None,
                    use_bias=False,
                )
            )
        layers.append(
            tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-4)
        )
        if i < len(hidden) and kind != "binary_all":
            layers.append(tf.keras.layers.Activation("relu"))
    return tf.keras.Sequential(layers)


def main(argv=None) -> int:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.random.set_seed(0)
    model = build(args.variant, args.hidden)
    opt = tf.keras.optimizers.Adam(1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    batches = [
        (
            tf.constant(
                rng.integers(0, 256, (args.batch_size, 28, 28, 1), np.uint8)
            ),
            tf.constant(rng.integers(0, 10, (args.batch_size,), np.int32)),
        )
        for _ in range(8)
    ]

    @tf.function(jit_compile=args.compile)
    def step(images, labels):
        x = tf.cast(images, tf.float32) / 255.0
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    times, cpu = _common.time_steps(step, batches, args.warmup, args.steps)
    print(
        json.dumps(
            _common.result(
                args,
                "larq",
                times,
                cpu,
                larq=lq.__version__ if hasattr(lq, "__version__") else None,
                tensorflow=tf.__version__,
                keras=tf.keras.__name__,
                intra_op_threads=(
                    tf.config.threading.get_intra_op_parallelism_threads()
                ),
                inter_op_threads=(
                    tf.config.threading.get_inter_op_parallelism_threads()
                ),
            )
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
