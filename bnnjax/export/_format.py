"""The ``.bnnjax`` file: writing, verifying and reading packed models.

A prefix (magic, version, header length), a JSON header, the arrays as raw
little-endian bytes aligned to 64, and a SHA-256 trailer over everything
before it; :doc:`/guides/file_format` describes every field. Writing is
atomic; reading checks the checksum before it trusts any byte and never
unpickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from bnnjax.export._schema import (
    _ARRAY_FIELDS,
    _DTYPES,
    _FORMAT,
    _PROGRAM_VERSION,
    FORMAT_VERSION,
    MAGIC,
    PackedModel,
    PackedSizes,
    _spec_from_json,
)

_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST_BYTES = 32
_ALIGN = 64


# --------------------------------------------------------------------------
# Writing.


def _payload(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, Any], list[bytes]]:
    manifest = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(arrays):
        value = np.asarray(arrays[name])
        dtype = (
            value.dtype.newbyteorder("<")
            if value.dtype.itemsize > 1
            else value.dtype
        )
        key = dtype.str
        if key not in _DTYPES:
            raise ValueError(
                f"array {name!r} has dtype {value.dtype}; the format stores "
                f"{sorted(_DTYPES)} only."
            )
        data = np.ascontiguousarray(value, dtype).tobytes()
        pad = -offset % _ALIGN
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        manifest[name] = {
            "dtype": key,
            "shape": [int(d) for d in value.shape],
            "offset": offset,
            "nbytes": len(data),
        }
        chunks.append(data)
        offset += len(data)
    return manifest, chunks


def _file_chunks(packed: PackedModel) -> Iterator[bytes]:
    """Yields the file's bytes in order (the SHA-256 trailer last)."""
    manifest, payload = _payload(packed.arrays)
    digest = hashlib.sha256()
    for chunk in payload:
        digest.update(chunk)
    header = dict(packed.header)
    header["arrays"] = manifest
    header["payload_bytes"] = sum(len(c) for c in payload)
    header["payload_sha256"] = digest.hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, int(header["format_version"]), len(text))
    pad = b"\0" * (-(len(prefix) + len(text)) % _ALIGN)
    whole = hashlib.sha256()
    for chunk in (prefix, text, pad, *payload):
        whole.update(chunk)
        yield chunk
    yield whole.digest()


def save(packed: PackedModel, path: str | os.PathLike[str]) -> int:
    """Writes ``packed`` to ``path`` atomically; returns the file's bytes.

    The bytes go to a temporary file in the same directory, which is
    flushed, ``fsync``-ed and renamed over ``path`` (``os.replace``); on
    any error the temporary file is removed and ``path`` is untouched.

    Args:
      packed: the model.
      path: destination file (its directory must exist).

    Returns:
      The size of the written file in bytes.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            for chunk in _file_chunks(packed):
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename; best effort
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return size


# --------------------------------------------------------------------------
# Reading.


def _fail(path: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _check_prefix(path: str, data: bytes) -> tuple[bytes, int, int]:
    """Checks the magic, whole-file checksum and version.

    Returns:
      ``(body, version, header_length)``: the file without its trailer.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise _fail(
            path,
            f"not a bnnjax packed model: it starts with {data[:8]!r}, "
            f"expected the magic bytes {MAGIC!r}.",
        )
    if len(data) < _PREFIX.size + _DIGEST_BYTES:
        raise _fail(path, f"truncated: only {len(data)} bytes.")
    body, trailer = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != trailer:
        raise _fail(
            path,
            "checksum mismatch: the file is corrupt or truncated (its last "
            "32 bytes are not the SHA-256 of the rest).",
        )
    _, version, header_len = _PREFIX.unpack_from(data)
    if not 1 <= version <= FORMAT_VERSION:
        raise _fail(
            path,
            f"format version {version} is not supported; this bnnjax reads "
            f"versions 1 to {FORMAT_VERSION}"
            + (" (upgrade bnnjax)." if version > FORMAT_VERSION else "."),
        )
    return body, version, header_len


def _read_header(
    path: str, body: bytes, version: int, header_len: int
) -> dict[str, Any]:
    """The JSON header, checked against the prefix's version."""
    start = _PREFIX.size
    if header_len > len(body) - start:
        raise _fail(path, f"header length {header_len} exceeds the file.")
    try:
        header = json.loads(body[start : start + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"the header is not JSON: {error}") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise _fail(path, f"the header does not describe a {_FORMAT!r} file.")
    if header.get("format_version") != version:
        raise _fail(
            path,
            f"the header says format version {header.get('format_version')!r}"
            f", the file starts with version {version}.",
        )
    return header


def _read_arrays(
    path: str, header: Mapping[str, Any], payload: bytes
) -> dict[str, np.ndarray]:
    """The arrays of the header's table: read-only views of ``payload``."""
    try:
        expected = int(header["payload_bytes"])
        manifest = header["arrays"]
        payload_digest = header["payload_sha256"]
    except (KeyError, TypeError, ValueError):
        raise _fail(path, "the header lacks its array table.") from None
    if len(payload) != expected:
        raise _fail(
            path,
            f"payload has {len(payload)} bytes, the header says {expected}.",
        )
    if hashlib.sha256(payload).hexdigest() != payload_digest:
        raise _fail(path, "payload checksum mismatch.")
    arrays = {}
    if not isinstance(manifest, dict):
        raise _fail(path, "the array table is not an object.")
    for name, entry in manifest.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise _fail(
                path, f"array {name!r} has an invalid table entry {entry!r}."
            ) from None
        count = math.prod(shape)
        if (
            min(shape, default=0) < 0
            or nbytes != count * dtype.itemsize
            or offset < 0
            or offset + nbytes > len(payload)
        ):
            raise _fail(path, f"array {name!r} does not fit the payload.")
        arrays[name] = np.frombuffer(payload, dtype, count, offset).reshape(
            shape
        )
    return arrays


def load(path: str | os.PathLike[str]) -> PackedModel:
    """Reads a packed model file, verifying it before using any byte.

    Checks, in order: the magic bytes (a foreign file), the SHA-256 trailer
    over the whole file (any flipped byte, a truncated file), the format
    version, the JSON header and its array table. Arrays are read with
    ``np.frombuffer`` from a dtype whitelist; nothing is unpickled.

    Args:
      path: the file.

    Returns:
      The :class:`PackedModel` (arrays are read-only views of the file's
      bytes).

    Raises:
      ValueError: naming the file, for a foreign, corrupt, truncated or
        newer-format file.
      OSError: if the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    body, version, header_len = _check_prefix(path, data)
    header = _read_header(path, body, version, header_len)
    end = _PREFIX.size + header_len
    payload = body[end + (-end % _ALIGN) :]
    arrays = _read_arrays(path, header, payload)
    result = PackedModel(header=header, arrays=arrays)
    if version == _PROGRAM_VERSION or "model" not in header:
        _check_program(result, path)
    else:
        _check_model(result, path)
    return result


def file_sizes(path: str | os.PathLike[str]) -> PackedSizes:
    """File bytes and source float32 bytes of a packed model file.

    Loads (and so verifies) the file.
    """
    packed = load(path)
    return PackedSizes(os.path.getsize(path), packed.float32_bytes)


# --------------------------------------------------------------------------
# What the header describes must exist.


def _check_program(packed: PackedModel, path: str) -> None:
    try:
        program = packed.header["program"]
        ops = program["ops"]
        defined = {program["input"]}
        for op in ops:
            kind = op["op"]
            if kind not in _ARRAY_FIELDS:
                raise _fail(path, f"unknown op {kind!r}.")
            inputs = op["in"] if isinstance(op["in"], list) else [op["in"]]
            missing = [v for v in inputs if v not in defined]
            if missing:
                raise _fail(path, f"op {kind!r} reads undefined {missing}.")
            for field in _ARRAY_FIELDS[kind]:
                name = op.get(field)
                if name is not None and name not in packed.arrays:
                    raise _fail(path, f"op {kind!r} needs array {name!r}.")
            defined.add(op["out"])
        if program["output"] not in defined:
            raise _fail(path, "the program's output is never computed.")
    except (KeyError, TypeError) as error:
        raise _fail(path, f"malformed program: {error!r}.") from None


def _check_model(packed: PackedModel, path: str) -> None:
    """Checks a version-2 header: its layers and variables exist."""
    try:
        spec = packed.header["model"]
        if spec["api"] not in ("linen", "nnx"):
            raise _fail(path, f"unknown model api {spec['api']!r}.")
        if not isinstance(spec["call_kwargs"], dict):
            raise _fail(path, "call_kwargs is not an object.")
        for entry in spec["layers"]:
            if entry["kind"] not in ("dense", "conv"):
                raise _fail(path, f"unknown layer kind {entry['kind']!r}.")
            if entry["input"] not in ("real", "bits"):
                raise _fail(path, f"unknown layer input {entry['input']!r}.")
            int(entry["n_in"])
            _spec_from_json(entry)
            for field in ("kernel", "alpha", "bias"):
                name = entry[field]
                if name is not None and name not in packed.arrays:
                    raise _fail(path, f"layer needs array {name!r}.")
        for name in spec["variables"]:
            if name not in packed.arrays:
                raise _fail(path, f"variable array {name!r} is missing.")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, ValueError) and str(error).startswith(path):
            raise
        raise _fail(path, f"malformed model description: {error!r}.") from None
