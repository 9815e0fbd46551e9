"""The secure model loader: signature, file allow-list and scan, anti-rollback, then safetensors only.

`SecureModelLoader.load(model_dir)` fails closed at the first problem with a
`ModelRefused` error that says what went wrong and what to do:

1. **signature** - the directory verifies against one of the trusted release
   public keys (`resources.signing.verify_model_manifest`); tampered bytes,
   added/removed files, unknown signers and missing signatures stop here.
2. **files** - only ``model.safetensors``, ``config.json`` and ``model.sig``
   may exist. Anything else is refused, and scanned with picklescan (strict)
   so the refusal says what it was. The weights must really be safetensors:
   picklescan must find no pickle in them, and the header must have the
   safetensors layout (8-byte little-endian length + a JSON object whose
   offsets stay inside the file). A pickle renamed ``model.safetensors`` and
   signed by a trusted key is refused here. The scan and the format check
   are `resources.artifact_formats`, shared with the MLflow upload guard.
3. **rollback** - ``config.json``'s ``version`` must be >= the highest version
   this loader ever accepted for that model line (kept in ``state_file``,
   written atomically), so an older, validly signed model cannot be pushed
   back as current.
4. **build** - the architecture comes from code (``architectures[name]``),
   the weights from safetensors with ``load_state_dict(strict=True)``; eval
   mode. Nothing is unpickled; ``torch.load`` is never called.

The weights and config are read into memory once; their BLAKE3 digests must
equal the signed digests, and exactly those bytes are scanned, parsed and
loaded. A file swapped on disk between verification and loading (TOCTOU) is
therefore caught. Signature verification happens at load only, never per
request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import torch
from safetensors.torch import load as load_safetensors_bytes

from resources.artifact_formats import NotSafetensors, safetensors_header, scan_for_pickle, sniff
from resources.atomic import atomic_write_bytes
from resources.signing import (
    CONFIG_FILE,
    SIGNATURE_FILE,
    WEIGHTS_FILE,
    PublicKeyLike,
    SignatureError,
    verify_model_manifest,
)

ALLOWED_FILES = frozenset({WEIGHTS_FILE, CONFIG_FILE, SIGNATURE_FILE})
MAX_CONFIG_BYTES = 1024 * 1024

Architectures = Mapping[str, Callable[[dict], torch.nn.Module]]


class ModelRefused(Exception):  # noqa: N818 - the name says what happened to the model
    """The loader refused a model; `stage` is where, `reason` is what went wrong and what to do."""

    def __init__(self, stage: str, reason: str):
        self.stage = stage
        self.reason = reason
        super().__init__(f"Model refused ({stage}): {reason}")


@dataclass
class LoadedModel:
    """A verified model, in eval mode, ready to answer from memory."""

    module: torch.nn.Module
    config: dict[str, Any]
    version: int
    signer: str
    digest: str
    model_dir: Path = field(default_factory=Path)

    def info(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "signer": self.signer,
            "digest": self.digest,
            "architecture": self.config["architecture"]["name"],
            "model_dir": str(self.model_dir),
        }


def model_line(config: Mapping[str, Any]) -> str:
    """Which model line a version number belongs to: ``config["name"]``, else the architecture name."""
    name = config.get("name")
    return name if isinstance(name, str) and name else str(config["architecture"]["name"])


# --- format checks (the sniffing itself is resources.artifact_formats) ---------------------------


def check_safetensors_format(data: bytes) -> dict[str, Any]:
    """Validate the safetensors layout (8-byte LE header length + JSON); return the header or raise."""
    try:
        return safetensors_header(data)
    except NotSafetensors as exc:
        raise ModelRefused(
            "format",
            f"{WEIGHTS_FILE} is not a safetensors file: {exc}. Only safetensors weights are ever "
            "deserialised; re-export the weights with safetensors.torch.save_file and promote again.",
        ) from exc


def _parse_config(data: bytes) -> dict[str, Any]:
    def refuse(why: str) -> ModelRefused:
        return ModelRefused(
            "config",
            f"{CONFIG_FILE} {why}. It must be a JSON object with "
            '{"architecture": {"name": ...}, "version": <int>}; fix the promotion step.',
        )

    if len(data) > MAX_CONFIG_BYTES:
        raise refuse("is larger than 1 MiB")
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise refuse(f"is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise refuse("is not a JSON object")
    architecture = config.get("architecture")
    if not isinstance(architecture, dict) or not isinstance(architecture.get("name"), str):
        raise refuse("has no architecture name")
    version = config.get("version")
    if type(version) is not int or version < 0:
        raise refuse(f"has version {version!r}, not a non-negative integer")
    return config


# --- the anti-rollback state ----------------------------------------------------------------------


class _VersionState:
    """Highest accepted version per model line, in a JSON file (atomic writes, flock'ed) or in memory."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._memory: dict[str, Any] = {"lines": {}}

    @contextlib.contextmanager
    def locked(self):
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory
        if not self.path.exists():
            return {"lines": {}}
        try:
            state = json.loads(self.path.read_bytes())
            if not isinstance(state, dict) or not isinstance(state.get("lines"), dict):
                raise ValueError("no 'lines' object")
        except ValueError as exc:
            raise ModelRefused(
                "rollback",
                f"the accepted-version state {self.path} is unreadable ({exc}), so a rollback cannot be "
                "ruled out. Restore it from backup (or inspect and delete it deliberately) before loading.",
            ) from exc
        return state

    def write(self, state: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = state
            return
        atomic_write_bytes(self.path, json.dumps(state, indent=2, sort_keys=True).encode(), mode=0o600)


# --- the loader -----------------------------------------------------------------------------------


class SecureModelLoader:
    """Loads a signed model directory, or refuses it with `ModelRefused` (fail closed)."""

    def __init__(
        self,
        trusted_public_keys: Sequence[PublicKeyLike],
        architectures: Architectures,
        state_file: Path | None = None,
        *,
        floor: int = 0,
    ):
        if not trusted_public_keys:
            raise ValueError("SecureModelLoader needs at least one trusted release public key.")
        self.trusted_public_keys = list(trusted_public_keys)
        self.architectures = dict(architectures)
        self.floor = floor  # the newest version on the operator's record: anything older is a rollback
        self._state = _VersionState(state_file)

    def highest_version(self, line: str) -> int | None:
        entry = self._state.read()["lines"].get(line)
        return entry["highest_version"] if entry else None

    def load(self, model_dir: Path) -> LoadedModel:
        model_dir = Path(model_dir)
        # 1. signature
        try:
            verified = verify_model_manifest(model_dir, self.trusted_public_keys)
        except SignatureError as exc:
            raise ModelRefused("signature", str(exc)) from exc

        # 2. files: allow-list, then scan and check the format of exactly the signed bytes
        self._refuse_unexpected_files(model_dir)
        weights = self._read_signed(model_dir, WEIGHTS_FILE, verified.files)
        findings = scan_for_pickle(weights, WEIGHTS_FILE, ".safetensors")
        if findings:
            what = sniff(weights) or "the header is not safetensors"
            raise ModelRefused(
                "format",
                f"{WEIGHTS_FILE} is not a safetensors file: {what}; picklescan found "
                f"{findings}. This is a trojan-model attempt (pickle payload in place of weights): do not "
                "load it anywhere, and find out how a trusted key came to sign it.",
            )
        check_safetensors_format(weights)
        config = _parse_config(self._read_signed(model_dir, CONFIG_FILE, verified.files))
        version, line = config["version"], model_line(config)

        # 3. rollback, then 4. build; the new version is recorded only after a successful build
        if version < self.floor:
            raise ModelRefused(
                "rollback",
                f"{model_dir} is version {version} of {line!r}, older than version {self.floor}, the newest "
                "release on the operator's record. A deleted, renamed or re-pointed release is a rollback; "
                "restore the newest release or promote a new one.",
            )
        with self._state.locked():
            highest = self.highest_version(line)
            if highest is not None and version < highest:
                raise ModelRefused(
                    "rollback",
                    f"{model_dir} is version {version} of {line!r}, older than version {highest} that this "
                    "server already accepted. Pushing an older (validly signed) model is a rollback; "
                    f"promote a new version instead (version > {highest}).",
                )
            module = self._build(config, weights)
            digest = verified.files[WEIGHTS_FILE]
            self._record(line, version, verified.signer, digest, highest)
        return LoadedModel(module, config, version, verified.signer, digest, model_dir)

    def _refuse_unexpected_files(self, model_dir: Path) -> None:
        for path in sorted(model_dir.rglob("*")):
            relative = path.relative_to(model_dir).as_posix()
            if relative in ALLOWED_FILES and path.is_file():
                continue
            what = "a folder" if path.is_dir() else self._describe(path)
            raise ModelRefused(
                "files",
                f"unexpected {relative!r} in {model_dir} ({what}). A model directory holds only "
                f"{sorted(ALLOWED_FILES)}; remove the file and promote again. Pickle-based formats "
                "(.pt, .bin, .pkl, .ckpt) are never loaded.",
            )
        for required in (WEIGHTS_FILE, CONFIG_FILE):
            if not (model_dir / required).is_file():
                raise ModelRefused("files", f"{model_dir} has no {required}; promote a complete model.")

    @staticmethod
    def _describe(path: Path) -> str:
        with open(path, "rb") as handle:
            findings = scan_for_pickle(handle, path.name, path.suffix or None)
        if findings:
            return f"picklescan: {findings}"
        return "not a pickle by picklescan, but not an allowed model file either"

    @staticmethod
    def _read_signed(model_dir: Path, name: str, signed: Mapping[str, str]) -> bytes:
        data = (model_dir / name).read_bytes()
        expected = signed.get(name)
        actual = "blake3:" + blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
        if expected != actual:
            raise ModelRefused(
                "signature",
                f"{name} changed after its signature was verified (signed {expected}, read {actual}). "
                "Someone is writing to the model directory; make it read-only and load again.",
            )
        return data

    def _build(self, config: dict[str, Any], weights: bytes) -> torch.nn.Module:
        name = config["architecture"]["name"]
        builder = self.architectures.get(name)
        if builder is None:
            raise ModelRefused(
                "architecture",
                f"architecture {name!r} is not one this server builds from code "
                f"({sorted(self.architectures)}); deploy the server code for it first.",
            )
        module = builder(dict(config["architecture"]))
        if not isinstance(module, torch.nn.Module):
            raise ModelRefused("architecture", f"the builder for {name!r} did not return a torch Module.")
        try:
            state = load_safetensors_bytes(weights)
            module.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors errors and strict load_state_dict mismatches
            raise ModelRefused(
                "weights",
                f"the weights do not fit architecture {name!r}: {exc}. Check that the config's "
                "architecture parameters match the trained model.",
            ) from exc
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module

    def _record(self, line: str, version: int, signer: str, digest: str, highest: int | None) -> None:
        if highest is not None and version == highest:
            return
        state = self._state.read()
        state["lines"][line] = {
            "highest_version": version,
            "signer": signer,
            "digest": digest,
            "accepted_at": datetime.now(UTC).isoformat(),
        }
        self._state.write(state)
