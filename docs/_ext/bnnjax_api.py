"""Sphinx helpers for the bnnjax API reference.

* ``.. public-api:: bnnjax.module``: documents every name in the module's
  ``__all__`` under its public path (``bnnjax.compare.tuning_grid``), not
  the private module that defines it, so pages follow the public names
  wherever the code lives.
* A reference that names an object by its defining module (a type
  annotation says ``bnnjax.binarize.Surrogate``) resolves to the page that
  documents the same object under its public name (``bnnjax.Surrogate``).
* Every public name of the modules in ``bnnjax_public_modules`` must be
  documented; a missing one is a warning, which ``-W`` turns into an error.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)


def resolve(name: str) -> object | None:
    """The object a dotted ``bnnjax...`` name refers to, or None.

    Attributes first, as Python code sees the name (``bnnjax.binarize`` is
    the function), then submodules (``bnnjax.binarize.IdentitySurrogate``
    lives in the module of the same name).
    """
    parts = name.split(".")
    try:
        obj = importlib.import_module(parts[0])
        for attr in parts[1:]:
            obj = getattr(obj, attr)
        return obj
    except (ImportError, AttributeError):
        pass
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _public_names(module: types.ModuleType) -> list[str]:
    """The module's ``__all__`` without submodules and dunder names."""
    names = []
    for name in getattr(module, "__all__", ()):
        if name.startswith("__"):
            continue
        if isinstance(getattr(module, name), types.ModuleType):
            continue
        names.append(name)
    return names


class PublicApi(SphinxDirective):
    """Documents the public names of one module, in ``__all__`` order.

    Functions and classes first, then constants. ``:exclude:`` takes a
    comma-separated list of names documented elsewhere.
    """

    required_arguments = 1
    option_spec: typing.ClassVar = {"exclude": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        modname = self.arguments[0]
        module = importlib.import_module(modname)
        exclude = {
            name.strip()
            for name in self.options.get("exclude", "").split(",")
            if name.strip()
        }
        code, data = [], []
        for name in _public_names(module):
            if name in exclude:
                continue
            obj = getattr(module, name)
            path = f"{modname}.{name}"
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                code += [f".. autoexception:: {path}", ""]
            elif inspect.isclass(obj):
                code += [f".. autoclass:: {path}", "   :members:", ""]
            elif callable(obj):
                code += [f".. autofunction:: {path}", ""]
            else:
                data += [f".. autodata:: {path}", ""]
        lines = [f".. automodule:: {modname}", "", *code, *data]
        content = StringList(lines, source=f"<public-api {modname}>")
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, content, node)
        return node.children


def _documented_name(env, target: str, obj: object) -> str | None:
    """The documented name of ``obj`` (or, for a bare name, of ``target``).

    An object is found by identity among the documented ``bnnjax`` objects.
    A bare name (no dot) that resolves to nothing in its module may still
    name exactly one documented object, as ``.Name`` does in Sphinx's own
    search (say ``LatentParam`` in a docstring of :mod:`bnnjax.convert`).
    """
    names = [
        name
        for name, entry in env.get_domain("py").objects.items()
        if name.startswith("bnnjax") and not entry.aliased
    ]
    if obj is not None:
        for name in names:
            if resolve(name) is obj:
                return name
        return None
    if "." in target:
        return None
    matches = [name for name in names if name.endswith(f".{target}")]
    return matches[0] if len(matches) == 1 else None


def _public_target(app, env, node, contnode):
    """Resolves a reference to a bnnjax object to the page documenting it.

    A ``TypeVar`` renders as plain text. A target that is not documented
    under any name stays unresolved, and nitpicky mode fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    modname = node.get("py:module") or ""
    if target.startswith("bnnjax."):
        qualified = target
    elif modname.startswith("bnnjax"):
        qualified = f"{modname}.{target}"
    else:
        return None
    obj = resolve(qualified)
    if isinstance(obj, typing.TypeVar):
        return contnode
    name = _documented_name(env, target, obj)
    if name is None:
        return None
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
    )


def _check_public_names(app, env) -> None:
    """Warns for every public name no page documents."""
    documented = {
        name
        for name, entry in env.get_domain("py").objects.items()
        if not entry.aliased
    }
    objects = [
        resolve(name) for name in documented if name.startswith("bnnjax")
    ]
    for modname in app.config.bnnjax_public_modules:
        module = importlib.import_module(modname)
        for name in _public_names(module):
            if f"{modname}.{name}" in documented:
                continue
            obj = getattr(module, name)
            if any(obj is other for other in objects):
                continue
            logger.warning(
                "public name %s.%s is not documented in docs/api/",
                modname,
                name,
                type="bnnjax",
                subtype="undocumented",
            )


_REPR = re.compile(r"<(?:class|function) '?([\w.]+)'?(?: at 0x[0-9a-f]+)?>")


def _readable_signature(
    app, what, name, obj, options, signature, return_annotation
):
    """Writes ``<class 'jax.numpy.float32'>`` defaults as ``jax.numpy.float32``.

    A dataclass's generated ``__init__`` has no source, so its defaults are
    reprs; those are not Python, which would make Sphinx split the
    signature at every comma. Other ``<...>`` reprs become ``...``.
    """
    if signature:
        signature = _REPR.sub(r"\1", signature.replace(".<locals>", ""))
        signature = re.sub(r"<[^<>]*>", "...", signature)
    return signature, return_annotation


def _skip_member(app, what, name, obj, skip, options):
    """Skips NamedTuple fields: their docstring is "Alias for field ..."."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.add_config_value("bnnjax_public_modules", (), "env")
    app.add_directive("public-api", PublicApi)
    app.connect("missing-reference", _public_target)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-signature", _readable_signature)
    app.connect("env-check-consistency", _check_public_names)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
