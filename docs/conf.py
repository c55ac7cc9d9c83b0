"""Sphinx configuration of the bnnjax documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -n``): every
warning, including a cross-reference that does not resolve or a public name
that no page documents, fails the build.
"""

from __future__ import annotations

import filecmp
import pathlib
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

import bnnjax  # noqa: E402

project = "bnnjax"
author = "bnnjax developers"
copyright = "bnnjax developers"
version = release = bnnjax.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "bnnjax_api",  # docs/_ext: public-api directive, public-name checks
]

exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints"]
root_doc = "index"

# MyST: $...$ math, ::: fences, and anchors for ## and ### headings so
# pages can link to sections ([text](page.md#a-section)).
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# The notebooks are executed by `make notebooks` (nbmake); the site renders
# them as stored (without outputs), so the docs build runs no training.
nb_execution_mode = "off"

# Docstrings are Google style with reStructuredText roles.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections become fields of the class, so a dataclass field
# is not described twice (once by napoleon, once by autodoc); the field
# types are in the class signature.
napoleon_use_ivar = True
napoleon_attr_annotations = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Defaults as written in the source (DEFAULT_MODULE_TYPES), not their repr.
autodoc_preserve_defaults = True

# The modules whose every public name (``__all__``) must be documented.
bnnjax_public_modules = (
    "bnnjax",
    "bnnjax.binarize",
    "bnnjax.scale",
    "bnnjax.optim",
    "bnnjax.convert",
    "bnnjax.summary",
    "bnnjax.nn",
    "bnnjax.nn.linen",
    "bnnjax.nn.nnx",
    "bnnjax.nn.functional",
    "bnnjax.models.linen",
    "bnnjax.models.nnx",
    "bnnjax.packed",
    "bnnjax.export",
    "bnnjax.train",
    "bnnjax.presets",
    "bnnjax.compare",
    "bnnjax.data",
    "bnnjax.distributed",
    "bnnjax.checkpoint",
    "bnnjax.plots",
)

html_theme = "sphinx_book_theme"
html_title = "bnnjax"
html_theme_options = {
    "repository_url": "https://github.com/bnnjax/bnnjax",
    "use_repository_button": True,
    "show_toc_level": 2,
}

# Nitpicky mode (-n) checks every cross-reference. Without intersphinx (the
# build runs offline) the types of JAX, Flax, optax, NumPy and the standard
# library cannot resolve; everything of bnnjax must.
_EXTERNAL = (
    r"(jax|jaxlib|jnp|lax|flax|nn|nnx|linen|optax|chex|numpy|np|npt|orbax|ocp"
    r"|typing|typing_extensions|collections|abc|types|os|pathlib|io|datetime"
    r"|dataclasses|enum|concurrent|argparse|json|matplotlib|tensorflow_datasets"
    r"|tfds|grain|tqdm)(\..*)?"
)
nitpick_ignore_regex = [
    (r"py:.*", _EXTERNAL),
    # Names standard in signatures that are not importable objects.
    (r"py:.*", r"(Array|ArrayLike|PRNGKey|DTypeLike|Shape|PyTree|Any)"),
    (r"py:.*", r"(Sequence|Mapping|Callable|Iterable|Iterator|Hashable)"),
    (r"py:.*", r"(NamedTuple|Path|PathLike|ClassVar|Literal|Self)"),
]


def _copy_notebooks() -> None:
    """Copies ../notebooks/*.ipynb into docs/notebooks/ (git-ignored).

    Sphinx reads sources inside docs/ only; a file is rewritten only when it
    changed, so unchanged notebooks are not rebuilt.
    """
    target = DOCS / "notebooks"
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        copy = target / source.name
        if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
            shutil.copyfile(source, copy)


_copy_notebooks()
