"""The residual policy: sign operands and STE windows kept as bits.

Gradients with packed residuals equal the unpacked path's bit for bit
(exact zeros, window edges, NaN, float32 and bfloat16; under jit, vmap and
grad), forward values are unchanged, and what the backward pass keeps is
really bits (read from ``jax.ad_checkpoint.print_saved_residuals``).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

import bnnjax
from bnnjax import _bits
from bnnjax.nn import _residuals
from bnnjax.nn import functional as F

SIGN = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
KERNEL = bnnjax.Binarizer(axis=-1)  # the founding method, per channel


def _assert_trees_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _saved(f, *args) -> list[tuple[str, tuple[int, ...], str]]:
    """``(dtype, shape, description)`` of each residual ``f``'s VJP keeps."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(f, *args)
    out = []
    for line in buf.getvalue().splitlines():
        m = re.match(r"(\w+)\[([\d,]*)\] (.*)", line)
        assert m, line
        shape = tuple(int(d) for d in m.group(2).split(",") if d)
        out.append((m.group(1), shape, m.group(3)))
    return out


def _computed_bytes(saved) -> int:
    """Bytes of the residuals that are not the function's own arguments."""
    size = {"f32": 4, "bf16": 2, "u8": 1, "bool": 1, "s32": 4}
    return sum(
        size[dtype] * int(np.prod(shape))
        for dtype, shape, what in saved
        if "from the argument" not in what
    )


# ---------------------------------------------------------------- bits


@pytest.mark.parametrize(
    "shape", [(1,), (7,), (8,), (3, 5), (2, 3, 4, 5), (4, 17)]
)
def test_bits_round_trip(shape):
    mask = np.random.default_rng(0).random(shape) < 0.5
    bits = _bits.pack_bits(jnp.asarray(mask))
    assert bits.dtype == jnp.uint8
    # The last axis is packed; the leading (batch) axes stay.
    assert bits.shape == (*shape[:-1], -(-shape[-1] // 8))
    np.testing.assert_array_equal(_bits.unpack_bits(bits, shape), mask)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_signs_round_trip(dtype):
    signs = jnp.where(jnp.arange(13) % 3 == 0, 1, -1).astype(dtype)
    back = _residuals.unpack_signs(_residuals.pack_signs(signs), (13,), dtype)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, signs)


def test_check_residuals_names_the_choices():
    assert _residuals.check_residuals("packed") == "packed"
    with pytest.raises(ValueError, match="auto, packed, unpacked"):
        _residuals.check_residuals("bits")


# ------------------------------------------------------- the STE window


def _window_inputs(dtype):
    # Exact zeros, both window edges, just outside them, large values, NaN.
    values = [0.0, -0.0, 1.0, -1.0, 1.0078125, -1.0078125, 0.5, -3.0, 7.0]
    return jnp.asarray([*values, float("nan")], dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("surrogate", ["ste", "clipped_ste"])
def test_packed_window_gradient_is_bitwise_equal(surrogate, dtype):
    x = _window_inputs(dtype)
    g = jnp.linspace(-2.0, 3.0, x.size).astype(dtype)

    def vjp(pack):
        def f(x):
            return bnnjax.binarize(x, surrogate, None, pack_residuals=pack)

        y, pull = jax.vjp(f, x)
        return y, pull(g)[0]

    (y0, d0), (y1, d1) = vjp(False), vjp(True)
    np.testing.assert_array_equal(y1, y0)
    assert d1.dtype == dtype
    np.testing.assert_array_equal(d1, d0)
    # The window gradient is the proxy's derivative (NaN is outside it).
    expected = bnnjax.get_surrogate(surrogate).derivative(
        x.astype(jnp.float32), ()
    )
    np.testing.assert_array_equal(
        d1, (g.astype(jnp.float32) * expected).astype(dtype)
    )


def test_packed_window_under_jit_vmap_grad():
    x = jax.random.normal(jax.random.key(0), (3, 40)) * 1.5
    x = x.at[:, 0].set(0.0)

    def loss(x, pack):
        y = bnnjax.binarize(x, "clipped_ste", None, pack_residuals=pack)
        return jnp.sum(y * jnp.arange(40.0))

    grads = [
        jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)), static_argnums=1)(
            x, pack
        )
        for pack in (False, True)
    ]
    np.testing.assert_array_equal(grads[1], grads[0])
    assert np.count_nonzero(grads[1]) > 0


def test_packed_window_keeps_one_bit_per_entry():
    x = jnp.linspace(-2.0, 2.0, 64)

    def f(pack):
        return lambda x: jnp.sum(
            bnnjax.binarize(x, "clipped_ste", None, pack_residuals=pack)
        )

    assert _computed_bytes(_saved(f(True), x)) == 64 // 8
    assert _saved(f(False), x)[0][:2] == ("f32", (64,))


def test_pack_residuals_is_ignored_by_smooth_surrogates():
    # Their derivative needs x itself: the same residuals either way.
    x = jnp.linspace(-2.0, 2.0, 16)
    for name in ("approx_sign", "scaled_sigmoid", "swish_sign"):
        saved = [
            _saved(
                lambda x, p=pack, n=name: jnp.sum(
                    bnnjax.binarize(x, n, None, pack_residuals=p)
                ),
                x,
            )
            for pack in (False, True)
        ]
        assert [s[:2] for s in saved[0]] == [s[:2] for s in saved[1]]


def test_pack_residuals_must_be_a_bool():
    with pytest.raises(TypeError, match="pack_residuals must be a bool"):
        bnnjax.binarize(jnp.ones(3), pack_residuals="yes")


# --------------------------------------------------------- the products


def _dense_grads(residuals, x, w, **kw):
    def loss(x, w):
        y = F.binary_dense(x, w, residuals=residuals, **kw)
        return jnp.sum(y * jnp.cos(jnp.arange(y.size).reshape(y.shape)))

    return F.binary_dense(x, w, residuals=residuals, **kw), jax.grad(
        loss, argnums=(0, 1)
    )(x, w)


DENSE_RULES = [
    {"kernel_binarizer": KERNEL, "input_binarizer": SIGN},
    {"kernel_binarizer": KERNEL, "input_binarizer": None},
    {
        "kernel_binarizer": bnnjax.Binarizer(surrogate="clipped_ste"),
        "input_binarizer": bnnjax.Binarizer(
            surrogate="approx_sign", scale=None
        ),
    },
    {  # inputs with a scale (XNOR): not signs, kept unpacked
        "kernel_binarizer": KERNEL,
        "input_binarizer": bnnjax.Binarizer(surrogate="ste", scale="mean_abs"),
    },
    {
        "kernel_binarizer": KERNEL,
        "input_binarizer": SIGN,
        "dtype": jnp.bfloat16,
    },
    {
        "kernel_binarizer": KERNEL,
        "input_binarizer": SIGN,
        "sign_product_dtype": jnp.bfloat16,
    },
]


@pytest.mark.parametrize("rule", range(len(DENSE_RULES)))
def test_dense_packed_gradients_are_bitwise_equal(rule):
    kw = DENSE_RULES[rule]
    kx, kw_ = jax.random.split(jax.random.key(rule))
    x = jax.random.normal(kx, (5, 24)).at[0, :3].set(0.0)
    w = jax.random.normal(kw_, (24, 9)).at[1, 2].set(0.0)
    # Eager against eager and jit against jit: under jit XLA may fold a
    # bfloat16 product's cast into the product, for both paths alike.
    _assert_trees_equal(
        _dense_grads("packed", x, w, **kw), _dense_grads("unpacked", x, w, **kw)
    )
    jitted = jax.jit(functools.partial(_dense_grads, **kw), static_argnums=0)
    _assert_trees_equal(jitted("packed", x, w), jitted("unpacked", x, w))
    np.testing.assert_array_equal(
        _dense_grads("packed", x, w, **kw)[0], F.binary_dense(x, w, **kw)
    )


@pytest.mark.parametrize("conv_impl", ["xla", "patches"])
@pytest.mark.parametrize(
    ("padding", "pad_value"), [("SAME", 0.0), ("SAME", -1.0), ("VALID", 0.0)]
)
def test_conv_packed_gradients_are_bitwise_equal(conv_impl, padding, pad_value):
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 4)).at[0, 0, 0].set(0.0)
    w = jax.random.normal(jax.random.key(2), (3, 3, 4, 5))

    def grads(residuals):
        def loss(x, w):
            y = F.binary_conv(
                x,
                w,
                padding=padding,
                pad_value=pad_value,
                kernel_binarizer=KERNEL,
                input_binarizer=SIGN,
                conv_impl=conv_impl,
                residuals=residuals,
            )
            return jnp.sum(y * jnp.sin(jnp.arange(y.size).reshape(y.shape)))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)

    _assert_trees_equal(grads("packed"), grads("unpacked"))


def test_dense_packed_under_vmap_over_seeds():
    x = jax.random.normal(jax.random.key(3), (3, 4, 16))
    w = jax.random.normal(jax.random.key(4), (3, 16, 8))

    def grads(residuals):
        def loss(x, w):
            y = F.binary_dense(
                x,
                w,
                kernel_binarizer=KERNEL,
                input_binarizer=SIGN,
                residuals=residuals,
            )
            return jnp.sum(y**2)

        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(x, w)

    _assert_trees_equal(grads("packed"), grads("unpacked"))


def test_auto_packs_dense_layers_from_1024_rows_and_4096_features():
    saves = F.dense_packing_saves
    on_cpu = jax.default_backend() == "cpu"
    assert saves(1024, 4096) is on_cpu
    assert saves(4096, 8192) is on_cpu
    assert not saves(1023, 4096)
    assert not saves(1024, 4095)
    assert not saves(100, 1024)
    resolve = _residuals.resolve_dense_residuals
    assert resolve("auto", rows=1024, in_features=4096) == (
        "packed" if on_cpu else "unpacked"
    )
    assert resolve("auto", rows=512, in_features=4096) == "unpacked"
    # An explicit policy is kept whatever the size.
    assert resolve("unpacked", rows=1024, in_features=4096) == "unpacked"
    assert resolve("packed", rows=8, in_features=16) == "packed"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU rule")
@pytest.mark.parametrize(
    ("rows", "in_features", "want"),
    [(1024, 4096, "packed"), (512, 4096, "unpacked"), (1024, 2048, "unpacked")],
)
def test_auto_dense_keeps_what_the_resolved_policy_keeps(
    rows, in_features, want
):
    # Shapes only: print_saved_residuals traces, nothing runs.
    x = jax.ShapeDtypeStruct((rows, in_features), jnp.float32)
    w = jax.ShapeDtypeStruct((in_features, 8), jnp.float32)

    def layer(residuals):
        def f(x, w):
            return F.binary_dense(
                x,
                w,
                kernel_binarizer=KERNEL,
                input_binarizer=SIGN,
                residuals=residuals,
            )

        return f

    other = "unpacked" if want == "packed" else "packed"
    auto = _saved(layer("auto"), x, w)
    assert auto == _saved(layer(want), x, w)
    assert auto != _saved(layer(other), x, w)
    assert any(dtype == "u8" for dtype, _, _ in auto) == (want == "packed")


def test_packed_policy_applies_to_sign_operands_only():
    apply = _residuals.packed_residuals_apply
    assert apply("packed", SIGN, KERNEL, kernel_is_signs=True) == (True, True)
    # "auto" packs nothing here: a dense layer resolves it first (above),
    # and convolutions keep autodiff's residuals.
    assert apply("auto", SIGN, KERNEL, kernel_is_signs=True) == (False, False)
    assert apply("packed", None, KERNEL, kernel_is_signs=True) == (False, True)
    assert apply("packed", SIGN, KERNEL, kernel_is_signs=False) == (True, False)
    scaled = bnnjax.Binarizer(surrogate="ste", scale="mean_abs")
    assert apply("packed", scaled, KERNEL, kernel_is_signs=True) == (
        False,
        True,
    )
    identity = bnnjax.Binarizer(surrogate="identity", scale=None)
    assert apply("packed", SIGN, identity, kernel_is_signs=True) == (
        True,
        False,
    )
    assert apply("unpacked", SIGN, KERNEL, kernel_is_signs=True) == (
        False,
        False,
    )


def test_packed_dense_keeps_bits_not_floats():
    x = jax.random.normal(jax.random.key(5), (8, 64))
    w = jax.random.normal(jax.random.key(6), (64, 32))

    def f(residuals):
        return lambda x, w: jnp.sum(
            F.binary_dense(
                x,
                w,
                kernel_binarizer=KERNEL,
                input_binarizer=SIGN,
                residuals=residuals,
            )
        )

    packed = _computed_bytes(_saved(f("packed"), x, w))
    unpacked = _computed_bytes(_saved(f("unpacked"), x, w))
    # Unpacked: sign(x) and sign(W) in float32 (x itself, the clipped STE's
    # residual, is an argument), plus two scale vectors; packed: the
    # window of x, sign(x) and sign(W), one bit each.
    assert unpacked == 4 * (x.size + w.size) + 2 * 4 * 32
    assert packed == (2 * x.size + w.size) // 8 + 2 * 4 * 32


def test_binary_dense_rejects_an_unknown_policy():
    with pytest.raises(ValueError, match="residuals='bits'"):
        F.binary_dense(
            jnp.ones((2, 3)),
            jnp.ones((3, 4)),
            kernel_binarizer=KERNEL,
            residuals="bits",
        )
