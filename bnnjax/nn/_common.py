"""Temporary re-exports for modules not yet moved to the split nn modules."""

from bnnjax.nn._checks import MODE_PADDINGS as _MODE_PADDINGS  # noqa: F401
from bnnjax.nn._checks import (
    canonicalize_kernel_size as canonicalize_kernel_size,
)
from bnnjax.nn._checks import canonicalize_padding as canonicalize_padding
from bnnjax.nn._checks import canonicalize_window as canonicalize_window
from bnnjax.nn._checks import check_pad_value as check_pad_value
from bnnjax.nn.functional import LATENT_KERNEL as LATENT_KERNEL
from bnnjax.nn.functional import explicit_padding as explicit_padding
from bnnjax.nn.functional import pad_inputs as pad_inputs
