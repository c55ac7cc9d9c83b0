"""Binarize a Flax model you already have, without editing its code.

:func:`binarize_model` takes a float ``flax.linen`` or ``flax.nnx`` model and
returns a binary one, following the approach of qwix (rules matched against
module paths, the model's source left alone):

* **linen, by method interception.** The returned module is the same model
  (a subclass of its class, as qwix builds) whose ``__call__`` runs under
  ``flax.linen.intercept_methods``. Each selected ``nn.Dense``/``nn.Conv``
  call is replaced by :func:`bnnjax.nn.functional.binary_dense` /
  ``binary_conv`` (the functions the binary layers call), with the
  intercepted module's own attributes. The interceptor re-creates the
  module's parameters with ``module.param("kernel", module.kernel_init,
  shape, module.param_dtype)``, so the parameter tree, including the name
  ``kernel``, is the float model's.
* **nnx, by module surgery.** The returned model is a clone of the float
  model in which each selected ``nnx.Linear``/``nnx.Conv`` is replaced by a
  :class:`BinarizedLinear`/:class:`BinarizedConv`. Those keep the attribute
  names ``kernel`` and ``bias`` and reuse the float values, but the kernel's
  variable type is :class:`bnnjax.nn.nnx.LatentParam`, so optimizers find
  the latent weights by type while ``nnx.state`` keeps the float model's
  paths and shapes.

Which layers, and how: a sequence of :class:`BinarizeRule`; for each layer,
the first rule that matches wins. Without rules, every Dense/Conv except the
first and the last is binarized with the founding method's kernel rule
(``bnnjax.Binarizer(axis=-1)``) and real-valued inputs, the usual practice.

*First* and *last* mean first and last **in call order**, for both APIs:
:func:`binarize_model` runs one abstract forward pass (``jax.eval_shape`` of
``model.init`` for linen, ``nnx.eval_shape`` of the call for nnx; no FLOPs,
no compilation) on the example inputs and records the order in which the
Dense/Conv layers are called. Call order is what "first layer" means to a
reader of the model; definition order in nnx is attribute order (sorted by
name), which need not be the data flow. The same trace defines the layer
set: a Dense/Conv that the example call does not reach is never binarized,
so the converted model, the labels and ``binarized_layers`` always agree.

Optimizer labels. linen: the converted module's ``param_labels(params)``
returns ``"binary"`` for every converted kernel and ``"real"`` for every
other leaf, ready for ``optax.partition(transforms,
converted.param_labels)``. nnx: select by type, e.g. ``nnx.state(model,
LatentParam)``, or build the label tree once from ``nnx.state(model,
nnx.Param)`` (see :func:`binarize_model`).

Float-only features that the binary math cannot honour raise a
``ValueError`` naming the layer and the attribute: ``input_dilation != 1``,
a kernel ``mask``, a custom ``dot_general``/``conv_general_dilated`` (or
their ``*_cls``), a custom ``promote_dtype`` and nnx's
``preferred_element_type``. Binarizers that need values the unmodified model
code cannot pass (stochastic surrogates need a key, annealed surrogates a
``progress``) are rejected by :class:`BinarizeRule`; build such models from
:mod:`bnnjax.nn` layers instead.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast, overload

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnnjax.binarize import Binarizer, EdeSurrogate
from bnnjax.nn import _checks, functional
from bnnjax.nn.nnx import LatentParam

__all__ = [
    "BinarizeRule",
    "BinarizedConv",
    "BinarizedLinear",
    "binarize_model",
]

DEFAULT_MODULE_TYPES: tuple[type, ...] = (
    nn.Dense,
    nn.Conv,
    nnx.Linear,
    nnx.Conv,
)
"""The layer types a rule may target: flax's dense and convolution layers."""

_DENSE_TYPES = (nn.Dense, nnx.Linear)
_CONV_TYPES = (nn.Conv, nnx.Conv)
_KERNEL = "kernel"

Model = nn.Module | nnx.Module


def _type_name(cls: type) -> str:
    for base, name in (
        (nn.Dense, "flax.linen.Dense"),
        (nn.Conv, "flax.linen.Conv"),
        (nnx.Linear, "flax.nnx.Linear"),
        (nnx.Conv, "flax.nnx.Conv"),
    ):
        if cls is base:
            return name
    return f"{cls.__module__}.{cls.__qualname__}"


_SUPPORTED = ", ".join(_type_name(t) for t in DEFAULT_MODULE_TYPES)


def _check_rule_binarizer(owner: str, name: str, value: object) -> None:
    """Rejects binarizers a converted model cannot feed."""
    binarizer = _checks.check_binarizer(f"{owner}.{name}", value, optional=True)
    if binarizer is None:
        return
    if binarizer.stochastic:
        raise ValueError(
            f"{owner}.{name} uses the stochastic surrogate "
            f"{type(binarizer.surrogate).__name__}, which needs a PRNG key "
            "per call that the float model's code does not pass. Use a "
            "deterministic surrogate, or build the model from bnnjax.nn "
            "layers (rng_collection=...)."
        )
    if isinstance(binarizer.surrogate, EdeSurrogate):
        raise ValueError(
            f"{owner}.{name} uses EdeSurrogate, which anneals with a "
            "training progress that the float model's code does not pass. "
            "Use a surrogate without a schedule (e.g. 'scaled_sigmoid', "
            "'clipped_ste'), or build the model from bnnjax.nn layers, "
            "whose __call__ takes progress=..."
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BinarizeRule:
    """Selects layers of a float model and says how to binarize them.

    A layer matches when it is an instance of one of ``module_types`` and
    ``re.fullmatch(module_path, path)`` holds for its path: the names from
    the converted model down to the layer joined by ``/``, e.g.
    ``"Dense_1"`` or ``"encoder/conv2"`` in linen and ``"layers/0"`` in nnx
    (the path ``nnx.state`` shows). In a sequence of rules, the first
    matching rule wins, so put exceptions first.

    A rule with ``kernel_binarizer=None`` keeps the layers it wins float;
    every other rule binarizes them::

        y = binarize_in(x) @ binarize_k(W) + b                  # dense
        y = conv_valid(pad(binarize_in(x), pad_value), binarize_k(W)) + b

    as the :mod:`bnnjax.nn` layers do (same code, same numbers).

    Example:
      >>> import flax.linen as nn
      >>> import bnnjax
      >>> from bnnjax.convert import BinarizeRule
      >>> sign = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
      >>> rules = [
      ...     BinarizeRule(module_path="stem|head", kernel_binarizer=None),
      ...     BinarizeRule(module_types=(nn.Conv,), input_binarizer=sign,
      ...                  pad_value=-1.0),
      ...     BinarizeRule(input_binarizer=sign),
      ... ]
      >>> rules[1].module_types == (nn.Conv,)
      True

    Attributes:
      module_path: regular expression matched (``re.fullmatch``) against the
        layer's path; default ``".*"``, every path.
      module_types: layer classes (or subclasses) the rule applies to; a
        subset of ``flax.linen.Dense``, ``flax.linen.Conv``,
        ``flax.nnx.Linear``, ``flax.nnx.Conv`` (default: all four, so one
        rule serves linen and nnx models). A single class is accepted.
      kernel_binarizer: the rule for the latent kernel, default
        ``bnnjax.Binarizer(axis=-1)`` (the founding method, one scale per
        output feature); ``None`` keeps the matched layers float.
      input_binarizer: the rule for the layer's inputs, or ``None`` (default)
        for real-valued inputs. A typical binary activation is
        ``bnnjax.Binarizer(surrogate="clipped_ste", scale=None)``.
      pad_value: constant the (binarized) inputs of a convolution are padded
        with (default ``0.0``, flax's zero padding); with a ``+-1`` input
        binarizer, ``-1.0`` or ``1.0`` keeps every value the kernel sees
        binary. A nonzero value needs convolution ``module_types`` and it is
        an error for such a rule to select a dense layer.

    Raises:
      TypeError: for a wrongly typed field (a surrogate name where a
        :class:`bnnjax.Binarizer` is expected, a non-class module type).
      ValueError: for an invalid regular expression, a module type that
        cannot be binarized (e.g. ``flax.linen.Embed``), a nonzero
        ``pad_value`` without a convolution type, ``input_binarizer`` or
        ``pad_value`` on a rule that keeps layers float, or a stochastic or
        annealed binarizer.
    """

    module_path: str = ".*"
    module_types: type | tuple[type, ...] = DEFAULT_MODULE_TYPES
    kernel_binarizer: Binarizer | None = functional.DEFAULT_KERNEL_BINARIZER
    input_binarizer: Binarizer | None = None
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.module_path, str):
            raise TypeError(
                "BinarizeRule.module_path must be a regular expression "
                f"(str), got {self.module_path!r} of type "
                f"{type(self.module_path).__name__}."
            )
        try:
            re.compile(self.module_path)
        except re.error as e:
            raise ValueError(
                f"BinarizeRule.module_path={self.module_path!r} is not a "
                f"valid regular expression: {e}. Escape literal names with "
                "re.escape."
            ) from None
        module_types = _check_module_types(self.module_types)
        object.__setattr__(self, "module_types", module_types)
        _check_rule_binarizer(
            "BinarizeRule", "kernel_binarizer", self.kernel_binarizer
        )
        _check_rule_binarizer(
            "BinarizeRule", "input_binarizer", self.input_binarizer
        )
        pad_value = _checks.check_pad_value(self.pad_value, "SAME")
        object.__setattr__(self, "pad_value", pad_value)
        if self.kernel_binarizer is None and (
            self.input_binarizer is not None or pad_value != 0.0
        ):
            raise ValueError(
                "BinarizeRule(kernel_binarizer=None) keeps the layers it "
                "selects float, so it takes no input_binarizer or pad_value; "
                f"got input_binarizer={self.input_binarizer!r}, "
                f"pad_value={pad_value!r}."
            )
        if pad_value != 0.0 and not any(
            issubclass(t, _CONV_TYPES) for t in module_types
        ):
            raise ValueError(
                f"BinarizeRule.pad_value={pad_value!r} only applies to "
                "convolutions, but module_types="
                f"({', '.join(_type_name(t) for t in module_types)}) "
                "holds none; add flax.linen.Conv or flax.nnx.Conv, or use "
                "pad_value=0.0."
            )

    @property
    def binarizes(self) -> bool:
        """Whether the layers this rule selects become binary."""
        return self.kernel_binarizer is not None

    def matches(self, path: str, module: object) -> bool:
        """Whether the layer ``module`` at ``path`` matches this rule.

        Args:
          path: the layer's ``/``-joined path from the converted model.
          module: the layer instance.
        """
        return isinstance(module, self.module_types) and (
            re.fullmatch(self.module_path, path) is not None
        )


def _check_module_types(value: object) -> tuple[type, ...]:
    types_ = (value,) if isinstance(value, type) else value
    if isinstance(types_, str) or not isinstance(types_, Sequence):
        raise TypeError(
            "BinarizeRule.module_types must be a class or a tuple of classes "
            f"among {_SUPPORTED}; got {value!r}."
        )
    if not types_:
        raise ValueError(
            "BinarizeRule.module_types is empty; expected classes among "
            f"{_SUPPORTED}."
        )
    for t in types_:
        if not isinstance(t, type):
            raise TypeError(
                "BinarizeRule.module_types must hold classes, got "
                f"{t!r} of type {type(t).__name__}; expected classes among "
                f"{_SUPPORTED}."
            )
        if not issubclass(t, DEFAULT_MODULE_TYPES):
            raise ValueError(
                f"BinarizeRule.module_types holds {_type_name(t)}, which "
                "cannot take a kernel binarizer: only dense and convolution "
                f"layers can be binarized, i.e. subclasses of {_SUPPORTED}."
            )
    return tuple(types_)


# -- float features the binary math cannot honour ----------------------------

_REASONS = {
    "dot_general": "a custom contraction cannot be honoured: binary layers "
    "contract with lax.dot_general",
    "dot_general_cls": "a custom contraction cannot be honoured: binary "
    "layers contract with lax.dot_general",
    "conv_general_dilated": "a custom convolution cannot be honoured: binary "
    "layers convolve with lax.conv_general_dilated",
    "conv_general_dilated_cls": "a custom convolution cannot be honoured: "
    "binary layers convolve with lax.conv_general_dilated",
    "promote_dtype": "a custom dtype promotion cannot be honoured: binary "
    "layers promote with flax's default rule",
    "preferred_element_type": "cannot be honoured: binary layers return the "
    "computation dtype",
    "mask": "a kernel mask cannot be honoured: masked zeros are not binary",
    "input_dilation": "cannot be honoured: input dilation inserts zeros "
    "between the inputs, so they are no longer binary",
}

# Attributes that must keep their flax default, per layer class.
_FIXED_ATTRIBUTES = (
    (nn.Dense, ("dot_general", "dot_general_cls", "promote_dtype")),
    (
        nn.Conv,
        (
            "mask",
            "conv_general_dilated",
            "conv_general_dilated_cls",
            "promote_dtype",
        ),
    ),
    (nnx.Linear, ("dot_general", "promote_dtype", "preferred_element_type")),
    (
        nnx.Conv,
        (
            "mask",
            "conv_general_dilated",
            "promote_dtype",
            "preferred_element_type",
        ),
    ),
)

_MISSING = object()


def _flax_default(base: type[Any], name: str) -> object:
    """The default of ``name`` in flax's own ``base`` layer."""
    fields = getattr(base, "__dataclass_fields__", None)
    if fields is not None:  # linen: a dataclass field
        field = fields.get(name)
        return _MISSING if field is None else field.default
    parameter = inspect.signature(base.__init__).parameters.get(name)
    return _MISSING if parameter is None else parameter.default


def _check_float_features(path: str, module: object) -> None:
    """Raises if ``module`` uses a float-only feature binary math lacks."""
    label = f"{path!r}" if path else "<root>"
    where = f"Cannot binarize layer {label} ({_type_name(type(module))})"
    advice = (
        "Remove it from the float model, or keep this layer float with a "
        "first rule BinarizeRule(module_path="
        f"{re.escape(path)!r}, kernel_binarizer=None)."
    )
    for base, names in _FIXED_ATTRIBUTES:
        if not isinstance(module, base):
            continue
        for name in names:
            default = _flax_default(base, name)
            value = getattr(module, name, default)
            if default is _MISSING or value is default:
                continue
            raise ValueError(
                f"{where}: {name}={value!r}; {_REASONS[name]}. {advice}"
            )
    if isinstance(module, _CONV_TYPES):
        dilation = getattr(module, "input_dilation", 1)
        values = (
            (dilation,)
            if dilation is None or isinstance(dilation, int)
            else tuple(dilation)
        )
        if any(v not in (None, 1) for v in values):
            raise ValueError(
                f"{where}: input_dilation={dilation!r}; "
                f"{_REASONS['input_dilation']}. {advice}"
            )
        if isinstance(module, nn.Conv) and not module.shared_weights:
            raise ValueError(
                f"{where}: shared_weights=False (a locally connected layer) "
                f"cannot be binarized. {advice}"
            )


# -- planning: which layers, in call order -----------------------------------


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A Dense/Conv layer seen in the planning trace."""

    parts: tuple[Any, ...]  # path from the model, as a tuple
    module: Any  # the layer instance (attributes only are read)

    @property
    def path(self) -> str:
        return "/".join(str(p) for p in self.parts)

    @property
    def is_dense(self) -> bool:
        return isinstance(self.module, _DENSE_TYPES)

    def describe(self) -> str:
        return f"{self.path or '<root>'!r} ({_type_name(type(self.module))})"


def _describe_all(layers: Sequence[_Layer]) -> str:
    if not layers:
        return "none"
    return ", ".join(layer.describe() for layer in layers)


def _split_dynamic(
    args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[
    list[Any],
    Callable[[Sequence[Any]], tuple[tuple[Any, ...], dict[str, Any]]],
]:
    """Splits example inputs into arrays (traced) and the rest (static)."""
    leaves, treedef = jax.tree.flatten((args, dict(kwargs)))
    is_array = [
        isinstance(
            leaf, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)
        )
        for leaf in leaves
    ]
    arrays = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]

    def rebuild(
        values: Sequence[Any],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        it = iter(values)
        full = [
            next(it) if a else leaf
            for leaf, a in zip(leaves, is_array, strict=True)
        ]
        return jax.tree.unflatten(treedef, full)

    return arrays, rebuild


def _resolve_rules(
    rules: Sequence[BinarizeRule] | None,
    layers: Sequence[_Layer],
    api: str,
) -> dict[tuple[Any, ...], BinarizeRule]:
    """Returns {layer path parts: rule} for the layers to binarize."""
    default = rules is None
    if rules is None:
        if len(layers) < 3:
            raise ValueError(
                "binarize_model's default rules keep the first and the last "
                "Dense/Conv layer (in call order) float and binarize the "
                f"ones between, but this {api} model calls only "
                f"{len(layers)}: {_describe_all(layers)}. Pass "
                "rules=[bnnjax.convert.BinarizeRule(...)] to choose."
            )
        keep = f"{re.escape(layers[0].path)}|{re.escape(layers[-1].path)}"
        rules = (
            BinarizeRule(module_path=keep, kernel_binarizer=None),
            BinarizeRule(),
        )
    matched: list[list[_Layer]] = [[] for _ in rules]
    won: list[list[_Layer]] = [[] for _ in rules]
    plan: dict[tuple[Any, ...], BinarizeRule] = {}
    for layer in layers:
        winner = None
        for i, rule in enumerate(rules):
            if rule.matches(layer.path, layer.module):
                matched[i].append(layer)
                if winner is None:
                    winner = i
        if winner is None:
            continue
        won[winner].append(layer)
        rule = rules[winner]
        if not rule.binarizes:
            continue
        if rule.pad_value != 0.0 and layer.is_dense:
            raise ValueError(
                f"rules[{winner}] has pad_value={rule.pad_value!r}, which "
                f"only applies to convolutions, but it selects the dense "
                f"layer {layer.describe()}. Restrict it with "
                "module_types=(flax.linen.Conv, flax.nnx.Conv) and add a "
                "rule for the dense layers."
            )
        _check_float_features(layer.path, layer.module)
        if isinstance(layer.module, nnx.Module):
            _check_nnx_call(layer)
        plan[layer.parts] = rule
    if not default:
        for i, rule in enumerate(rules):
            if won[i]:
                continue
            # __post_init__ stored the classes as a tuple.
            module_types = cast(tuple[type, ...], rule.module_types)
            if matched[i]:
                raise ValueError(
                    f"rules[{i}] ({rule!r}) selects no layer: every layer "
                    f"it matches ({_describe_all(matched[i])}) is taken by "
                    "an earlier rule. Remove it or reorder the rules."
                )
            raise ValueError(
                f"rules[{i}] (module_path={rule.module_path!r}, "
                "module_types=("
                f"{', '.join(_type_name(t) for t in module_types)})) "
                f"matches no layer of this {api} model. Its Dense/Conv "
                f"layers, in call order: {_describe_all(layers)}."
            )
    if not plan:
        raise ValueError(
            f"The rules binarize no layer of this {api} model; every layer "
            "they select is kept float (kernel_binarizer=None). Its "
            f"Dense/Conv layers, in call order: {_describe_all(layers)}."
        )
    return plan


def _check_rules(rules: object) -> tuple[BinarizeRule, ...] | None:
    if rules is None:
        return None
    if isinstance(rules, BinarizeRule):
        raise TypeError(
            "rules must be a sequence of BinarizeRule; wrap a single rule "
            "in a list: rules=[rule]."
        )
    if isinstance(rules, str) or not isinstance(rules, Sequence):
        raise TypeError(
            f"rules must be None or a sequence of BinarizeRule, got "
            f"{rules!r} of type {type(rules).__name__}."
        )
    if not rules:
        raise ValueError(
            "rules is empty: pass None for the default rules (every "
            "Dense/Conv except the first and the last), or at least one "
            "BinarizeRule."
        )
    for i, rule in enumerate(rules):
        if not isinstance(rule, BinarizeRule):
            raise TypeError(
                f"rules[{i}] must be a bnnjax.convert.BinarizeRule, got "
                f"{rule!r} of type {type(rule).__name__}."
            )
    return tuple(rules)


# -- linen: method interception ----------------------------------------------


def _raw_method(cls: type, name: str) -> Callable[..., Any]:
    method = getattr(cls, name)
    return getattr(method, "__wrapped__", method)


@functools.cache
def _linen_calls() -> tuple[tuple[type, Callable[..., Any]], ...]:
    # The undecorated __call__ functions of flax's Dense and Conv. Matching on
    # the function (not the class) intercepts exactly flax's computation,
    # also when a subclass reaches it through super().__call__.
    return (
        (nn.Dense, _raw_method(nn.Dense, "__call__")),
        (nn.Conv, _raw_method(nn.Conv, "__call__")),
    )


def _linen_layer_call(context: Any) -> bool:
    """Whether an intercepted call is flax's own Dense/Conv computation."""
    if context.method_name != "__call__":
        return False
    func = getattr(context.orig_method, "func", None)
    return any(
        func is raw and isinstance(context.module, cls)
        for cls, raw in _linen_calls()
    )


def _single_input(
    path: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> jax.Array:
    kwargs = dict(kwargs)
    if len(args) == 1 and not kwargs:
        return jnp.asarray(args[0])
    if not args and set(kwargs) == {"inputs"}:
        return jnp.asarray(kwargs["inputs"])
    raise TypeError(
        f"Binarized layer {path!r} takes one argument, inputs; got "
        f"{len(args)} positional and keyword(s) {sorted(kwargs)}."
    )


def _linen_binary_call(
    module: nn.Module,
    rule: BinarizeRule,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> jax.Array:
    """flax's Dense/Conv forward pass, binarized with ``rule``."""
    path = "/".join(module.path)
    _check_float_features(path, module)
    inputs = _single_input(path, args, kwargs)
    if isinstance(module, nn.Dense):
        if inputs.ndim < 1:
            raise ValueError(
                f"Dense layer {path!r} needs inputs of shape "
                "(..., in_features), got a scalar."
            )
        kernel_shape: tuple[int, ...] = (inputs.shape[-1], module.features)
    else:
        kernel_size = _checks.canonicalize_kernel_size(module.kernel_size)
        _checks.check_conv_rank(inputs.shape, kernel_size)
        kernel_shape = _checks.conv_kernel_shape(
            kernel_size,
            inputs.shape[-1],
            module.features,
            module.feature_group_count,
        )
    # The module's own names, initializers and dtypes: the parameter tree
    # stays the float model's.
    kernel = module.param(
        _KERNEL, module.kernel_init, kernel_shape, module.param_dtype
    )
    bias = None
    if module.use_bias:
        bias = module.param(
            "bias", module.bias_init, (module.features,), module.param_dtype
        )
    # Plans hold binarizing rules only (kernel_binarizer is not None).
    kernel_binarizer = cast(Binarizer, rule.kernel_binarizer)
    if isinstance(module, nn.Dense):
        return functional.binary_dense(
            inputs,
            kernel,
            bias,
            kernel_binarizer=kernel_binarizer,
            input_binarizer=rule.input_binarizer,
            dtype=module.dtype,
            precision=module.precision,
        )
    return functional.binary_conv(
        inputs,
        kernel,
        bias,
        strides=module.strides,
        padding=module.padding,
        kernel_dilation=module.kernel_dilation,
        feature_group_count=module.feature_group_count,
        pad_value=rule.pad_value,
        kernel_binarizer=kernel_binarizer,
        input_binarizer=rule.input_binarizer,
        dtype=module.dtype,
        precision=module.precision,
    )


def _linen_layers(
    model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> list[_Layer]:
    """Dense/Conv layers in the order one abstract ``init`` calls them."""
    layers: dict[tuple[str, ...], _Layer] = {}

    def record(
        next_fun: Callable[..., Any],
        call_args: tuple[Any, ...],
        call_kwargs: dict[str, Any],
        context: Any,
    ) -> Any:
        if _linen_layer_call(context):
            parts = tuple(context.module.path)
            layers.setdefault(parts, _Layer(parts, context.module))
        return next_fun(*call_args, **call_kwargs)

    arrays, rebuild = _split_dynamic(args, kwargs)

    def init(arrays: Sequence[Any]) -> Any:
        call_args, call_kwargs = rebuild(arrays)
        return model.init(jax.random.key(0), *call_args, **call_kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(init, arrays)
    return list(layers.values())


def _linen_class(
    base: type[nn.Module], plan: Mapping[tuple[str, ...], BinarizeRule]
) -> type[nn.Module]:
    """A subclass of ``base`` whose ``__call__`` binarizes ``plan``."""
    plan = dict(plan)
    kernels = tuple((*parts, _KERNEL) for parts in plan)
    # As qwix: wrap the undecorated method, so that linen wraps the new one
    # once (one call per module for capture_intermediates, summaries).
    raw: Any = base.__call__
    while hasattr(raw, "method_handler_wrapped"):
        raw = raw.__wrapped__
    # The model is itself a flax Dense/Conv: nothing to intercept, the
    # method is flax's computation.
    is_layer = any(raw is layer_call for _, layer_call in _linen_calls())
    root_rule = plan.get(()) if is_layer else None

    def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if root_rule is not None:
            return _linen_binary_call(self, root_rule, args, kwargs)
        root = tuple(self.path) if self.scope is not None else ()

        def interceptor(
            next_fun: Callable[..., Any],
            call_args: tuple[Any, ...],
            call_kwargs: dict[str, Any],
            context: Any,
        ) -> Any:
            if _linen_layer_call(context):
                parts = tuple(context.module.path)
                if parts[: len(root)] == root:
                    rule = plan.get(parts[len(root) :])
                    if rule is not None:
                        return _linen_binary_call(
                            context.module, rule, call_args, call_kwargs
                        )
            return next_fun(*call_args, **call_kwargs)

        with nn.intercept_methods(interceptor):
            return raw(self, *args, **kwargs)

    functools.update_wrapper(__call__, raw)
    if getattr(raw, "compact", False):
        __call__ = nn.compact(__call__)

    def param_labels(self: nn.Module, params: Any) -> Any:
        """``"binary"`` for converted kernels, ``"real"`` elsewhere.

        Args:
          params: the ``"params"`` collection of this model (not the whole
            variables dict).

        Returns:
          A tree of ``params``' structure with a label at every leaf, for
          ``optax.partition``.

        Raises:
          ValueError: if ``params`` holds none of the converted kernels.
        """
        del self
        found: set[tuple[str, ...]] = set()

        def label(path: jax.tree_util.KeyPath[Any], _: object) -> str:
            keys = tuple(getattr(k, "key", None) for k in path)
            for kernel in kernels:
                if keys[: len(kernel)] == kernel:
                    found.add(kernel)
                    return "binary"
            return "real"

        labels = jax.tree_util.tree_map_with_path(label, params)
        if not found:
            raise ValueError(
                "params holds none of the binarized kernels "
                f"{['/'.join(k) for k in kernels]}; pass the 'params' "
                "collection, e.g. variables['params'], of this model."
            )
        return labels

    namespace = {
        "__call__": __call__,
        "__module__": base.__module__,
        "__doc__": base.__doc__,
        "param_labels": nn.nowrap(param_labels),
        "binarized_layers": types.MappingProxyType(
            {"/".join(parts): rule for parts, rule in plan.items()}
        ),
        "_bnnjax_float_type": base,
    }
    return type(base.__name__, (base,), namespace)


def _binarize_linen(
    model: nn.Module,
    rules: tuple[BinarizeRule, ...] | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> nn.Module:
    if hasattr(type(model), "_bnnjax_float_type"):
        raise ValueError(
            "This linen model is already binarized; convert the float "
            "model instead."
        )
    if model.scope is not None:
        raise ValueError(
            "binarize_model needs an unbound linen module (the model "
            "definition), not one bound to variables; pass e.g. "
            "model.clone() of the definition you call init/apply on."
        )
    layers = _linen_layers(model, args, kwargs)
    plan = _resolve_rules(rules, layers, "linen")
    converted = model.copy()
    # As qwix: keep the instance (fields, name) and swap in the subclass.
    object.__setattr__(converted, "__class__", _linen_class(type(model), plan))
    return converted


# -- nnx: module surgery -----------------------------------------------------


def _check_nnx_call(layer: _Layer) -> None:
    base = nnx.Linear if isinstance(layer.module, nnx.Linear) else nnx.Conv
    if type(layer.module).__call__ is not base.__call__:
        raise TypeError(
            f"Cannot binarize layer {layer.describe()}: its class overrides "
            f"{base.__name__}.__call__, which a binary replacement would "
            "drop. Keep it float with a first rule BinarizeRule(module_path="
            f"{re.escape(layer.path)!r}, kernel_binarizer=None)."
        )


class _BinarizedLayer(nnx.Module):
    """Shared construction of the nnx replacements."""

    def _init_from(
        self,
        module: nnx.Linear | nnx.Conv,
        base: type,
        kernel_binarizer: Binarizer,
        input_binarizer: Binarizer | None,
    ) -> None:
        name = type(self).__name__
        if not isinstance(module, base):
            raise TypeError(
                f"{name} replaces a {_type_name(base)}, got "
                f"{module!r} of type {type(module).__name__}."
            )
        _check_float_features("", module)
        _check_rule_binarizer(name, "kernel_binarizer", kernel_binarizer)
        if kernel_binarizer is None:
            raise TypeError(f"{name}.kernel_binarizer must not be None.")
        _check_rule_binarizer(name, "input_binarizer", input_binarizer)
        # Same value and metadata, variable type LatentParam.
        self.kernel = LatentParam.from_metadata(
            module.kernel.get_value(), module.kernel.get_metadata()
        )
        self.bias: nnx.Param[jax.Array] | None
        self.bias = nnx.data(None) if module.bias is None else module.bias
        self.in_features = module.in_features
        self.out_features = module.out_features
        self.use_bias = module.use_bias
        self.dtype = module.dtype
        self.param_dtype = module.param_dtype
        self.precision = module.precision
        self.kernel_binarizer = kernel_binarizer
        self.input_binarizer = input_binarizer

    def _operands(
        self, inputs: jax.typing.ArrayLike, out_sharding: Any
    ) -> tuple[jax.typing.ArrayLike, jax.Array, jax.Array | None]:
        if out_sharding is not None:
            raise ValueError(
                f"{type(self).__name__} does not support out_sharding; got "
                f"{out_sharding!r}."
            )
        bias = None if self.bias is None else self.bias[...]
        return inputs, self.kernel[...], bias


class BinarizedLinear(_BinarizedLayer):
    """The binary replacement of an ``nnx.Linear`` made by model surgery.

    Keeps the float layer's attribute names (``kernel``, ``bias``), values,
    metadata and configuration, so ``nnx.state`` paths and shapes do not
    change; the kernel becomes a :class:`bnnjax.nn.nnx.LatentParam`.
    Forward (:func:`bnnjax.nn.functional.binary_dense`, as
    :class:`bnnjax.nn.nnx.BinaryLinear`)::

        y = binarize_in(x) @ binarize_k(kernel) + bias

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> import bnnjax
      >>> layer = BinarizedLinear(
      ...     nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
      ...     kernel_binarizer=bnnjax.Binarizer(axis=-1))
      >>> type(layer.kernel).__name__
      'LatentParam'
      >>> layer(jnp.ones((2, 3))).shape
      (2, 4)

    Args:
      linear: the float layer; its ``kernel`` value and metadata are copied
        into a new :class:`LatentParam`, its ``bias`` variable is reused.
      kernel_binarizer: the rule for the latent kernel.
      input_binarizer: the rule for the inputs, or ``None`` for real inputs.

    Raises:
      TypeError: if ``linear`` is not an ``nnx.Linear`` or a binarizer has
        the wrong type.
      ValueError: if ``linear`` uses a feature binary math cannot honour
        (custom ``dot_general``/``promote_dtype``,
        ``preferred_element_type``), or for a stochastic or annealed
        binarizer.
    """

    def __init__(
        self,
        linear: nnx.Linear,
        *,
        kernel_binarizer: Binarizer = functional.DEFAULT_KERNEL_BINARIZER,
        input_binarizer: Binarizer | None = None,
    ):
        self._init_from(linear, nnx.Linear, kernel_binarizer, input_binarizer)

    def __call__(
        self, inputs: jax.typing.ArrayLike, out_sharding: Any = None
    ) -> jax.Array:
        """Applies the layer to ``(..., in_features)`` inputs."""
        inputs, kernel, bias = self._operands(inputs, out_sharding)
        return functional.binary_dense(
            inputs,
            kernel,
            bias,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=self.input_binarizer,
            dtype=self.dtype,
            precision=self.precision,
        )


class BinarizedConv(_BinarizedLayer):
    """The binary replacement of an ``nnx.Conv`` made by model surgery.

    Keeps the float layer's attribute names (``kernel``, ``bias``), values,
    metadata and configuration (``kernel_size``, ``strides``, ``padding``,
    ``kernel_dilation``, ``feature_group_count``, ``dtype``,
    ``precision``); the kernel becomes a :class:`bnnjax.nn.nnx.LatentParam`.
    Forward (:func:`bnnjax.nn.functional.binary_conv`, as
    :class:`bnnjax.nn.nnx.BinaryConv`)::

        y = conv_valid(pad(binarize_in(x), pad_value), binarize_k(kernel)) + b

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> layer = BinarizedConv(nnx.Conv(2, 4, (3, 3), rngs=nnx.Rngs(0)))
      >>> layer.kernel.shape
      (3, 3, 2, 4)
      >>> layer(jnp.ones((1, 5, 5, 2))).shape
      (1, 5, 5, 4)

    Args:
      conv: the float layer; its ``kernel`` value and metadata are copied
        into a new :class:`LatentParam`, its ``bias`` variable is reused.
      kernel_binarizer: the rule for the latent kernel.
      input_binarizer: the rule for the inputs, or ``None`` for real inputs.
      pad_value: constant the (binarized) inputs are padded with.

    Raises:
      TypeError: if ``conv`` is not an ``nnx.Conv`` or a binarizer has the
        wrong type.
      ValueError: if ``conv`` uses a feature binary math cannot honour
        (``input_dilation``, ``mask``, custom ``conv_general_dilated``/
        ``promote_dtype``, ``preferred_element_type``), for an invalid
        ``pad_value``, or for a stochastic or annealed binarizer.
    """

    def __init__(
        self,
        conv: nnx.Conv,
        *,
        kernel_binarizer: Binarizer = functional.DEFAULT_KERNEL_BINARIZER,
        input_binarizer: Binarizer | None = None,
        pad_value: float = 0.0,
    ):
        self._init_from(conv, nnx.Conv, kernel_binarizer, input_binarizer)
        kernel_size = _checks.canonicalize_kernel_size(conv.kernel_size)
        rank = len(kernel_size)
        padding = _checks.canonicalize_padding(conv.padding, rank)
        self.kernel_size = kernel_size
        self.strides = _checks.canonicalize_window(
            "strides", conv.strides, rank
        )
        self.padding = padding
        self.kernel_dilation = _checks.canonicalize_window(
            "kernel_dilation", conv.kernel_dilation, rank
        )
        self.feature_group_count = int(conv.feature_group_count)
        self.pad_value = _checks.check_pad_value(pad_value, padding)

    def __call__(
        self, inputs: jax.typing.ArrayLike, out_sharding: Any = None
    ) -> jax.Array:
        """Applies the convolution to ``(*batch, *spatial, in)`` inputs."""
        inputs, kernel, bias = self._operands(inputs, out_sharding)
        return functional.binary_conv(
            inputs,
            kernel,
            bias,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=self.feature_group_count,
            pad_value=self.pad_value,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=self.input_binarizer,
            dtype=self.dtype,
            precision=self.precision,
        )


class _CallRecorder(nnx.Module):
    """Stands in for a layer during planning; records that it was called."""

    def __init__(self, module: nnx.Module, record: Callable[[], None]):
        self.module = module
        self.record = record  # static: a functools.partial

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.record()
        return self.module(*args, **kwargs)


def _nnx_layers(
    model: nnx.Module,
) -> dict[tuple[Any, ...], nnx.Linear | nnx.Conv]:
    return {
        tuple(path): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, (nnx.Linear, nnx.Conv))
    }


def _replace_modules(
    root: nnx.Module, replacements: Mapping[int, nnx.Module]
) -> nnx.Module:
    """Replaces every reference to the keyed modules (by ``id``) in place.

    Shared references are all replaced. Returns the new root (the root
    itself may be replaced).
    """
    if id(root) in replacements:
        return replacements[id(root)]
    parents = [module for _, module in nnx.iter_modules(root)]
    for parent in parents:
        for key, child in list(nnx.iter_children(parent)):
            new = replacements.get(id(child))
            if new is None:
                continue
            if isinstance(parent, (nnx.List, nnx.Dict)):
                # An nnx.List's children are keyed by int, a Dict's by str.
                parent[key] = new  # type: ignore[index]
            else:
                setattr(parent, cast(str, key), new)  # attribute names
    new_ids = {id(new) for new in replacements.values()}
    modules = {tuple(path): module for path, module in nnx.iter_modules(root)}
    for path, module in modules.items():
        inside_new = any(
            id(modules.get(path[:i])) in new_ids for i in range(len(path))
        )
        if id(module) in replacements and not inside_new:
            raise ValueError(
                f"Cannot replace the layer at {'/'.join(map(str, path))!r}: "
                "it is held in a container model surgery cannot edit (e.g. "
                "a tuple). Store sub-modules as attributes, in nnx.List or "
                "in nnx.Dict."
            )
    return root


def _nnx_call_order(
    model: nnx.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> list[_Layer]:
    """Linear/Conv layers in the order one abstract forward pass calls them."""
    probe = nnx.clone(model)
    candidates = _nnx_layers(probe)
    order: list[tuple[Any, ...]] = []
    recorders = {
        id(module): _CallRecorder(
            module, functools.partial(order.append, parts)
        )
        for parts, module in candidates.items()
    }
    probe = _replace_modules(probe, recorders)
    arrays, rebuild = _split_dynamic(args, kwargs)

    def forward(module: nnx.Module, arrays: Sequence[Any]) -> Any:
        call_args, call_kwargs = rebuild(arrays)
        return module(*call_args, **call_kwargs)

    nnx.eval_shape(forward, probe, arrays)
    originals = _nnx_layers(model)
    seen = dict.fromkeys(order)  # first call of each layer, in order
    return [_Layer(parts, originals[parts]) for parts in seen]


def _binarize_nnx(
    model: nnx.Module,
    rules: tuple[BinarizeRule, ...] | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> nnx.Module:
    layers = _nnx_call_order(model, args, kwargs)
    plan = _resolve_rules(rules, layers, "nnx")
    converted = nnx.clone(model)
    modules = _nnx_layers(converted)
    replacements: dict[int, nnx.Module] = {}
    for parts, rule in plan.items():
        module = modules[parts]
        # Plans hold binarizing rules only (kernel_binarizer is not None).
        kernel_binarizer = cast(Binarizer, rule.kernel_binarizer)
        new: _BinarizedLayer
        if isinstance(module, nnx.Linear):
            new = BinarizedLinear(
                module,
                kernel_binarizer=kernel_binarizer,
                input_binarizer=rule.input_binarizer,
            )
        else:
            new = BinarizedConv(
                module,
                kernel_binarizer=kernel_binarizer,
                input_binarizer=rule.input_binarizer,
                pad_value=rule.pad_value,
            )
        replacements[id(module)] = new
    return _replace_modules(converted, replacements)


# -- the entry point ---------------------------------------------------------


@overload
def binarize_model(
    model: nn.Module,
    *example_args: Any,
    rules: Sequence[BinarizeRule] | None = None,
    **example_kwargs: Any,
) -> nn.Module: ...


@overload
def binarize_model(
    model: nnx.Module,
    *example_args: Any,
    rules: Sequence[BinarizeRule] | None = None,
    **example_kwargs: Any,
) -> nnx.Module: ...


def binarize_model(
    model: Model,
    *example_args: Any,
    rules: Sequence[BinarizeRule] | None = None,
    **example_kwargs: Any,
) -> Model:
    """Turns a float Flax model into a binary one without editing its code.

    Selected ``Dense``/``Conv`` layers (``nnx.Linear``/``nnx.Conv``) compute
    what the :mod:`bnnjax.nn` binary layers compute, with the same code
    (:func:`bnnjax.nn.functional.binary_dense`/``binary_conv``) and the float
    layer's own ``features``, ``kernel_size``, ``strides``, ``padding``,
    ``kernel_dilation``, ``feature_group_count``, ``use_bias``, ``dtype``,
    ``param_dtype``, ``precision``, initializers and metadata; the rest of
    the model is untouched. The parameters keep the float model's tree
    (same paths, the name ``kernel``, same shapes and dtypes), so a float
    checkpoint loads unchanged and fine-tuning starts from it.

    The example inputs drive one abstract forward pass (no FLOPs, no
    compilation) that finds the layers in call order; arrays or
    ``jax.ShapeDtypeStruct`` are traced, other values (flags such as
    ``train=False``) are passed as they are. The call must not need random
    streams other than linen's ``"params"`` (e.g. run dropout
    deterministically). Layers the example call does not reach stay float.

    * linen: returns a module of a subclass of ``type(model)`` (same name and
      fields) whose ``__call__`` runs under ``flax.linen.intercept_methods``;
      use ``init``/``apply`` as usual. It adds ``param_labels(params)`` (a
      label tree, ``"binary"`` exactly at the converted kernels) and
      ``binarized_layers`` (``{path: rule}``). Only ``__call__`` is
      intercepted: ``apply(..., method=...)`` runs the float code.
    * nnx: returns a clone of ``model`` (the input is not modified) in which
      each selected layer is a :class:`BinarizedLinear`/
      :class:`BinarizedConv` whose kernel is a :class:`LatentParam`. Label
      optimizers once, from the model, e.g. ``jax.tree.map(lambda v:
      "binary" if isinstance(v, LatentParam) else "real", nnx.state(model,
      nnx.Param), is_leaf=lambda v: isinstance(v, nnx.Variable))``.

    Args:
      model: an unbound ``flax.linen.Module`` or a ``flax.nnx.Module``.
      *example_args: positional inputs of one call (linen: of ``init``
        after the key; nnx: of ``model(...)``).
      rules: the :class:`BinarizeRule` sequence, first match wins; ``None``
        (default) binarizes every Dense/Conv except the first and the last
        in call order with ``BinarizeRule()`` (the founding method's kernel
        binarizer, real-valued inputs).
      **example_kwargs: keyword inputs of that call.

    Returns:
      The binary model, of the same API as ``model``.

    Raises:
      TypeError: if ``model`` is neither a linen nor an nnx Module, no
        example input is given, ``rules`` is not a sequence of
        :class:`BinarizeRule`, or a selected nnx layer's class overrides
        ``__call__``.
      ValueError: if a rule selects no layer (the message lists the layers),
        the rules binarize nothing, a ``pad_value`` rule selects a dense
        layer, a selected layer uses a float-only feature (named with the
        layer's path), the default rules meet fewer than three layers, or a
        linen model is bound or already binarized.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         for features in (8, 8, 8):
      ...             x = nn.relu(nn.Dense(features)(x))
      ...         return nn.Dense(2)(x)
      >>> x = jnp.ones((4, 3))
      >>> binary = binarize_model(MLP(), x)
      >>> sorted(binary.binarized_layers)
      ['Dense_1', 'Dense_2']
      >>> params = binary.init(jax.random.key(0), x)["params"]
      >>> params["Dense_1"]["kernel"].shape
      (8, 8)
      >>> binary.param_labels(params)["Dense_1"]
      {'bias': 'real', 'kernel': 'binary'}
      >>> binary.apply({"params": params}, x).shape
      (4, 2)
    """
    checked_rules = _check_rules(rules)
    if not isinstance(model, (nn.Module, nnx.Module)):
        raise TypeError(
            "binarize_model expects a flax.linen.Module or a flax.nnx.Module, "
            f"got {model!r} of type {type(model).__name__}."
        )
    if not example_args and not example_kwargs:
        raise TypeError(
            "binarize_model needs example inputs of one call, e.g. "
            "binarize_model(model, jnp.ones((1, 28, 28, 1))); they find the "
            "layers in call order (jax.ShapeDtypeStruct works too)."
        )
    if isinstance(model, nn.Module):
        return _binarize_linen(
            model, checked_rules, example_args, example_kwargs
        )
    return _binarize_nnx(model, checked_rules, example_args, example_kwargs)
