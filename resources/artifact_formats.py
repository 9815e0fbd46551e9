"""What an artifact file really is: pickle, zip (torch checkpoint) or safetensors, from its bytes.

One sniffer for the whole project, used by the secure model loader
(`resources.loader`) and by the MLflow upload guard (`resources.tracking`).
Standard library and picklescan only: the isolated inference worker imports
it through the loader, so nothing here may pull in Dagster, MLflow or Spark.

What counts as a pickle (`pickle_evidence`, the upload guard's test):

* a **pickle suffix** (`PICKLE_SUFFIXES`), whatever the contents;
* a **zip archive** (local-file magic ``PK\\x03\\x04`` at the start, or a zip
  directory at the end): ``torch.save`` writes a zip whose ``data.pkl`` is a
  pickle, and the archive can carry any other pickle too, so every zip is
  refused, whatever its suffix (``weights.bin``, ``model.pt``, ...);
* a **pickle protocol header**: PROTO (``0x80``, 0..5) followed by opcodes that
  parse, to STOP or for at least 8 opcodes. Ciphertext and safetensors headers
  can start with ``0x80`` too, but their next bytes do not parse as pickle
  opcodes (and a well-formed safetensors file is never a pickle);
* a **picklescan** finding: a global import (``GLOBAL``, ``INST``,
  ``STACK_GLOBAL``) that names an importable Python object, or ``unknown``
  where picklescan could not resolve a ``STACK_GLOBAL``'s operands. Only that
  catches protocol 0 and 1 pickles, which have no header: a protocol 0/1
  pickle that imports something (the only kind that can run code) is caught,
  one that holds only builtins (no globals) is caught only by its suffix.

`scan_for_pickle` is picklescan in strict mode, as the loader uses it on the
weights: there every global, every scanner error and every parse error inside
a pickle counts. The upload guard takes only importable-looking globals from
the same scan, because text files starting with ``c`` or ``i`` (``count,...``,
``item_id,...``) read as a GLOBAL/INST opcode to picklescan, and ~0.5% of
random bytes (ciphertext) make it fail on a ``STACK_GLOBAL`` with no operands,
which no unpickler could execute.

`safetensors_header` checks the safetensors layout: an 8-byte little-endian
header length, then a JSON object whose tensor entries have a known dtype, a
shape and data offsets inside the file.
"""

from __future__ import annotations

import io
import json
import logging
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from picklescan.scanner import scan_bytes

__all__ = [
    "MAX_HEADER_BYTES",
    "PICKLE_PROTOCOLS",
    "PICKLE_SUFFIXES",
    "SAFETENSORS_DTYPES",
    "ZIP_MAGIC",
    "NotSafetensors",
    "pickle_evidence",
    "read_safetensors_header",
    "safetensors_header",
    "scan_for_pickle",
    "sniff",
]

PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".dill"})
PICKLE_PROTOCOLS = tuple(bytes([0x80, n]) for n in range(6))  # PROTO opcode + protocol number
ZIP_MAGIC = b"PK\x03\x04"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
SAFETENSORS_DTYPES = frozenset(
    {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"}
    | {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"}
)

_HEAD_BYTES = 1 << 16  # enough opcodes to tell a pickle stream from lookalike bytes
_MIN_PICKLE_OPCODES = 8
_PYTHON_NAME = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")  # a dotted Python name


class NotSafetensors(ValueError):  # noqa: N818 - reads as what the bytes are
    """The bytes are not a well-formed safetensors file; the message says why."""


# --- sniffing -------------------------------------------------------------------------------------


def sniff(data: bytes) -> str | None:
    """What the opening bytes say: a pickle, a zip archive, or None (neither)."""
    if data.startswith(PICKLE_PROTOCOLS):
        return "looks like a pickle (starts with a pickle PROTO opcode)"
    if data.startswith(ZIP_MAGIC):
        return "looks like a zip archive, e.g. a torch.save checkpoint that holds a pickle"
    return None


def scan_for_pickle(data: bytes | BinaryIO, file_id: str, file_ext: str | None = None) -> list[str]:
    """Strict picklescan: every global import, dangerous opcode or scan error is a finding."""
    result, error = _picklescan(data, file_id, file_ext)
    if result is None:  # a scanner that cannot parse the file is a failure, not a pass
        return [f"picklescan could not scan it ({error})"]
    findings = [f"{g.safety.value} import {g.module}.{g.name}" for g in result.globals]
    if result.scan_err:
        findings.append("picklescan hit a parse error inside a pickle stream")
    if result.issues_count and not findings:
        findings.append(f"{result.issues_count} dangerous item(s)")
    return findings


def pickle_evidence(path: Path) -> str | None:
    """Why the file at `path` is (or holds) a pickle, or None if nothing says so.

    Checked in order: the suffix, a zip archive, a well-formed safetensors
    file (never a pickle), a pickle protocol header with parsable opcodes,
    then picklescan's importable global imports (see the module docstring).
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return f"its suffix {path.suffix!r} is a pickle format's"
    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
        zipped = _describe_zip(fh, head)
        if zipped:
            return zipped
    if _is_safetensors_file(path):
        return None
    if _parses_after_proto(head):
        return f"it starts with a pickle PROTO {head[1]} opcode followed by pickle opcodes"
    with path.open("rb") as fh:
        imports = _importable_globals(fh, path.name, path.suffix or None)
    if imports:
        return f"picklescan found global import(s) {imports[:3]} in a pickle stream"
    return None


def _picklescan(data: bytes | BinaryIO, file_id: str, file_ext: str | None) -> tuple[Any, str | None]:
    """picklescan's strict result, or (None, "what went wrong") if it could not scan the bytes."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    scanner_log = logging.getLogger("picklescan")
    level = scanner_log.level
    scanner_log.setLevel(logging.ERROR)  # "could not parse as pickle" is the *good* case for weights
    try:
        return scan_bytes(stream, file_id, file_ext, strict=True), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        scanner_log.setLevel(level)


def _importable_globals(stream: BinaryIO, file_id: str, file_ext: str | None) -> list[str]:
    """picklescan's global imports that could name a real object (``unknown``: an evasion it saw)."""
    result, _error = _picklescan(stream, file_id, file_ext)
    if result is None:
        return []
    return sorted(
        f"{g.module}.{g.name}"
        for g in result.globals
        if _PYTHON_NAME.fullmatch(g.module) and _PYTHON_NAME.fullmatch(g.name)
    )


def _parses_after_proto(head: bytes) -> bool:
    """True if `head` starts with PROTO and its opcodes parse: to STOP, or for at least 8 opcodes."""
    if not head.startswith(PICKLE_PROTOCOLS):
        return False
    parsed = 0
    try:
        for opcode, _arg, _pos in pickletools.genops(head):
            parsed += 1
            if opcode.name == "STOP" or parsed >= _MIN_PICKLE_OPCODES:
                return True
    except Exception:  # not (or no longer) a parsable pickle stream
        return parsed >= _MIN_PICKLE_OPCODES
    return parsed >= _MIN_PICKLE_OPCODES


def _describe_zip(fh: BinaryIO, head: bytes) -> str | None:
    """Why the open file is a zip archive (naming a torch checkpoint's pickle), or None."""
    if not head.startswith(ZIP_MAGIC):
        fh.seek(0)
        if not zipfile.is_zipfile(fh):  # a zip directory at the end, after any prefix
            return None
    fh.seek(0)
    try:
        with zipfile.ZipFile(fh) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    pickled = [n for n in names if Path(n).suffix.lower() in PICKLE_SUFFIXES]
    if any(Path(n).name == "data.pkl" for n in pickled):
        return f"it is a torch.save zip checkpoint (its pickle: {pickled[0]})"
    if pickled:
        return f"it is a zip archive holding pickle(s) {pickled[:3]}"
    return "it is a zip archive (the container torch.save writes, with a pickle inside), not a plain file"


# --- safetensors ----------------------------------------------------------------------------------


def safetensors_header(data: bytes) -> dict[str, Any]:
    """The header of the safetensors file `data`; raises `NotSafetensors` saying why it is not one."""
    if len(data) < 8:
        raise NotSafetensors("shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise NotSafetensors(sniff(data) or "the header is not safetensors")
    return _parse_header(data, data[8 : 8 + length], len(data))


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """`safetensors_header` for a file, reading only its header (the tensors may be large)."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        opening = fh.read(8)
        if len(opening) < 8:
            raise NotSafetensors("shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", opening)
        if length == 0 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise NotSafetensors(sniff(opening) or "the header is not safetensors")
        raw = fh.read(length)
    return _parse_header(opening, raw, size)


def _is_safetensors_file(path: Path) -> bool:
    try:
        read_safetensors_header(path)
    except NotSafetensors:
        return False
    return True


def _parse_header(opening: bytes, raw: bytes, size: int) -> dict[str, Any]:
    """Validate the JSON header `raw` of a safetensors file of `size` bytes that starts with `opening`."""
    if not raw.startswith(b"{"):
        raise NotSafetensors(sniff(opening) or "the header is not safetensors")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate keys in the header")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotSafetensors(f"its header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise NotSafetensors("its header is not a JSON object")
    body = size - 8 - len(raw)
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise NotSafetensors("__metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise NotSafetensors(f"tensor {name!r} has a malformed entry")
        offsets, shape = entry["data_offsets"], entry["shape"]
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise NotSafetensors(f"tensor {name!r} has unknown dtype {entry['dtype']!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise NotSafetensors(f"tensor {name!r} has a malformed shape")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body
        ):
            raise NotSafetensors(f"tensor {name!r} has data offsets outside the file")
    return header
