"""The binary CNNs in Larq (Keras 2 / tf-keras): same networks and optimizer.

Input ``(batch, 28, 28, 1)`` (channels-last), no biases,
``BatchNormalization`` (momentum 0.9, epsilon 1e-4) after every layer,
Adam (lr 1e-3) on every parameter, softmax cross-entropy, ``uint8``
images scaled to ``[0, 1]`` inside the step, which is a ``tf.function``
(``jit_compile=True`` with ``--compile``), as Keras' ``fit`` builds it.
Networks (``--network``):

* ``larq_tutorial``: Larq's MNIST guide, conv 32 (3x3, valid) - pool 2
  - BN, conv 64 - pool 2 - BN, conv 64 - BN, flatten (576), dense 64 -
  BN, dense 10 - BN; every BN with ``scale=False``; latent kernels
  clipped to ``[-1, 1]`` after each update (``kernel_constraint=
  "weight_clip"``, applied by the optimizer);
* ``binarynet_quarter``: BinaryNet's CNN at a quarter of its width, six
  3x3 ``same`` convs (32, 32, 64, 64, 128, 128), a 2x2 max pool after
  convs 2, 4 and 6 (pool before BN), BN after every conv, flatten (1152),
  dense 256 - BN, dense 256 - BN, dense 10 - BN; no kernel constraint.

Variants (``--variant``):

* ``binary_all``: ``larq.layers.QuantConv2D`` / ``QuantDense`` with
  ``kernel_quantizer="ste_sign"`` (``sign`` with the clipped
  straight-through gradient ``1{|x| <= 1}``) and
  ``input_quantizer="ste_sign"`` on every layer after the first; no ReLU;
* ``float``: plain ``Conv2D`` / ``Dense`` and a ReLU after every hidden BN
  (the constraint dropped too).

Larq needs Keras 2: install ``larq tensorflow-cpu tf-keras`` and run with
``TF_USE_LEGACY_KERAS=1`` (set here before TensorFlow is imported).

Prints one JSON line with every timed step (``--steps``, after
``--warmup`` steps).

Usage (in an environment with larq):
  python benchmarks/peers/larq_cnn.py --network larq_tutorial --steps 100
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

NETWORKS = _common.CNN_NETWORKS


def build(network: str, kind: str) -> tf.keras.Model:
    spec = NETWORKS[network]
    specs = spec["layers"]
    layers = [tf.keras.layers.InputLayer(input_shape=(28, 28, 1))]
    for i, (layer, width, pool) in enumerate(specs):
        if layer == "dense" and specs[i - 1][0] == "conv":
            layers.append(tf.keras.layers.Flatten())
        if kind == "float":
            if layer == "conv":
                layers.append(
                    tf.keras.layers.Conv2D(
                        width,
                        3,
                        padding="same" if spec["same"] else "valid",
                        use_bias=False,
                    )
                )
            else:
                layers.append(tf.keras.layers.Dense(width, use_bias=False))
        else:
            quant = {
                "input_quantizer": "ste_sign" if i > 0 else None,
                "kernel_quantizer": "ste_sign",
                "kernel_constraint": "weight_clip" if spec["clip"] else None,
                "use_bias": False,
            }
            if layer == "conv":
                layers.append(
                    lq.layers.QuantConv2D(
                        width,
                        3,
                        padding="same" if spec["same"] else "valid",
                        **quant,
                    )
                )
            else:
                layers.append(lq.layers.QuantDense(width, **quant))
        if pool:
            layers.append(tf.keras.layers.MaxPool2D(2))
        layers.append(
            tf.keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-4, scale=spec["bn_scale"]
            )
        )
        if i < len(specs) - 1 and kind == "float":
            layers.append(tf.keras.layers.Activation("relu"))
    return tf.keras.Sequential(layers)


def main(argv=None) -> int:
    args = _common.parse_cnn_args(__doc__.splitlines()[0], argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.random.set_seed(0)
    model = build(args.network, args.variant)
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
    constraint = "weight_clip" if NETWORKS[args.network]["clip"] else None
    print(
        json.dumps(
            _common.result(
                args,
                "larq",
                times,
                cpu,
                network=args.network,
                kernel_constraint=(
                    None if args.variant == "float" else constraint
                ),
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
