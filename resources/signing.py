"""Model signing: OpenSSF `model_signing` over a model directory, offline, with an EC release key.

A model directory is the unit that is signed, shipped and loaded::

    <dir>/model.safetensors   weights
    <dir>/config.json         {"architecture": {"name": ..., ...}, "version": int, ...}
    <dir>/model.sig           Sigstore bundle written by model_signing (ignored when hashing)

The signature covers every other file in the directory (BLAKE3 per file), so a
changed byte, an added or removed file, or an edited version number is
detected. Signing uses the elliptic-curve private-key signer: no Sigstore, no
network. Only the promotion step holds the release key (`resources.releases.ReleaseSigner`); the
server trusts a list of release *public* keys (`verify_model`).

Pitfalls of model-signing 1.1.1 handled here:

* The library takes key *paths*. Private keys are handed to it through an
  anonymous in-memory file (``memfd_create``) where the OS has one, otherwise
  through a 0600 file in a private temp folder removed right afterwards.
* `verifying.Config.verify` *mutates* its hashing config: it adds the
  ``ignore_paths`` recorded in the signature. Reusing a config therefore lets
  one model's ignore list leak into the next verification, so a fresh
  verifying and hashing config is built for every attempt.
* The ``ignore_paths`` come from the signed payload. Anything but the
  signature file in that list is refused, so a signature cannot exempt files
  from hashing. Git paths (``.git``, ``.gitignore`` ...) are ignored by the
  library by default; here they are *not* ignored, so they are covered too.
* The verifier compares manifests by digests only; the same hashing config as
  at signing (BLAKE3, per-file, no symlinks) is passed instead of letting the
  library guess it from the (attacker-supplied) signature.
* The library does not check that manifest paths stay inside the model
  directory (a ``../x`` entry merely shows up as "missing"); this module
  rejects absolute paths, ``..`` components and backslashes explicitly, before
  any hashing.
* The EC verifier prints a warning to *stdout* for bundles without a key hint;
  processes that use stdout as a protocol channel (``serving.worker``) must
  redirect it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_public_key,
)
from model_signing import hashing as ms_hashing
from model_signing import signing as ms_signing
from model_signing import verifying as ms_verifying

from resources.atomic import atomic_write_bytes
from resources.digests import IntegrityError, digest_file

SIGNATURE_FILE = "model.sig"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HASH_ALGORITHM = "blake3"
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
MAX_SIGNATURE_BYTES = 16 * 1024 * 1024

PublicKeyLike = ec.EllipticCurvePublicKey | bytes | str


class SignatureError(IntegrityError):
    """A model directory's signature is missing, invalid, from an untrusted key, or does not match."""


@dataclass(frozen=True)
class VerifiedModel:
    """What a successful verification proves: who signed, and the signed digest of every file."""

    signer: str
    files: dict[str, str] = field(default_factory=dict)  # relative path -> "blake3:<hex>"


# --- keys -----------------------------------------------------------------------------------------


def public_key_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of a key (the form servers list as trusted release keys)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(key: PublicKeyLike | ec.EllipticCurvePrivateKey) -> str:
    """``ecdsa-<curve>:<first 16 hex of sha256(SubjectPublicKeyInfo DER)>``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    public = _load_public_key(key)
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    curve = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}[public.curve.name]
    return f"ecdsa-{curve}:{hashlib.sha256(der).hexdigest()[:16]}"


def _load_public_key(key: PublicKeyLike) -> ec.EllipticCurvePublicKey:
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        try:
            key = load_pem_public_key(key)
        except ValueError as exc:
            raise SignatureError(f"A trusted release key is not a valid PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError(
            f"Trusted release keys must be EC public keys (P-256/384/521), got {type(key).__name__}."
        )
    if key.curve.name not in SUPPORTED_CURVES:
        raise SignatureError(f"Unsupported curve {key.curve.name}: model_signing accepts {SUPPORTED_CURVES}.")
    return key


def _library_key_hint(public: ec.EllipticCurvePublicKey) -> str:
    """The key hint model_signing writes into the bundle: sha256 hex of the public key PEM."""
    return hashlib.sha256(public_key_pem(public)).hexdigest()


@contextlib.contextmanager
def _key_path(pem: bytes) -> Iterator[Path]:
    """A path model_signing can read a key from, with the bytes kept off disk where possible."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("model-signing-key", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="model-signing-") as folder:  # created 0700
        path = Path(folder) / "key.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


# --- hashing config -------------------------------------------------------------------------------


def _hashing_config() -> ms_hashing.Config:
    """The one hashing config used to sign and to verify (a fresh object every time: it gets mutated)."""
    return (
        ms_hashing.Config()
        .use_file_serialization(hashing_algorithm=HASH_ALGORITHM, allow_symlinks=False)
        .set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)
    )


# --- signing --------------------------------------------------------------------------------------


def sign_model(model_dir: Path, private_key: ec.EllipticCurvePrivateKey) -> Path:
    """Sign every file of `model_dir` (BLAKE3, offline EC key); writes `model.sig` atomically."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir() or model_dir.is_symlink():
        raise SignatureError(f"Cannot sign {model_dir}: not a directory (symlinks are not signed).")
    if private_key.curve.name not in SUPPORTED_CURVES:
        raise SignatureError(f"Unsupported curve {private_key.curve.name}; use one of {SUPPORTED_CURVES}.")
    pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    target = model_dir / SIGNATURE_FILE
    with tempfile.TemporaryDirectory(prefix="model-sig-") as scratch, _key_path(pem) as key_path:
        staged = Path(scratch) / SIGNATURE_FILE
        try:
            (
                ms_signing.Config()
                .set_hashing_config(_hashing_config())
                .use_elliptic_key_signer(private_key=key_path)
                .sign(model_dir, staged)
            )
        except ValueError as exc:  # symlinks, special files
            raise SignatureError(f"Cannot sign {model_dir}: {exc}") from exc
        atomic_write_bytes(target, staged.read_bytes(), mode=0o644)
    return target


# --- verification ---------------------------------------------------------------------------------


def _safe_relative(name: str) -> bool:
    if not name or "\\" in name or "\x00" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "." not in name.split("/")


def _read_bundle(signature: Path) -> tuple[dict, str]:
    """Parse the (not yet authenticated) bundle: its in-toto statement and the key hint."""
    if signature.is_symlink() or not signature.is_file():
        raise SignatureError(
            f"No signature: {signature} is missing (or not a regular file). The model was not signed "
            "by the promotion step; promote it again, never copy an unsigned model into place."
        )
    if signature.stat().st_size > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"Signature {signature} is implausibly large; refusing to parse it.")
    try:
        bundle = json.loads(signature.read_bytes())
        envelope = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        hint = bundle.get("verificationMaterial", {}).get("publicKey", {}).get("hint", "")
        predicate = statement["predicate"]
        serialization = predicate["serialization"]
        resources = predicate["resources"]
        if not isinstance(resources, list) or not isinstance(serialization, dict):
            raise TypeError("predicate has the wrong shape")
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError) as exc:
        raise SignatureError(
            f"Signature {signature} is not a model_signing bundle ({type(exc).__name__}: {exc})."
        ) from exc
    return statement, hint if isinstance(hint, str) else ""


def _check_statement(statement: dict, model_dir: Path) -> None:
    """Reject what the library would accept or only report confusingly."""
    predicate = statement["predicate"]
    serialization = predicate["serialization"]
    if serialization.get("method") != "files" or serialization.get("hash_type") != HASH_ALGORITHM:
        raise SignatureError(
            f"Signature of {model_dir} uses serialization {serialization.get('method')!r}/"
            f"{serialization.get('hash_type')!r}; this pipeline signs per file with {HASH_ALGORITHM}."
        )
    if serialization.get("allow_symlinks") is not False:
        raise SignatureError(f"Signature of {model_dir} allows symlinks; refusing.")
    ignored = serialization.get("ignore_paths", [])
    if not isinstance(ignored, list) or set(ignored) - {SIGNATURE_FILE}:
        raise SignatureError(
            f"Signature of {model_dir} exempts {sorted(set(map(str, ignored)) - {SIGNATURE_FILE})} from "
            f"hashing; only {SIGNATURE_FILE} may be ignored."
        )
    for resource in predicate["resources"]:
        name = resource.get("name") if isinstance(resource, dict) else None
        if not isinstance(name, str) or not _safe_relative(name):
            raise SignatureError(
                f"Signature of {model_dir} lists the path {name!r}, which leaves the model directory "
                "(absolute, '..' or malformed). This is a path-traversal attempt; refusing."
            )


def _check_tree(model_dir: Path) -> None:
    if model_dir.is_symlink() or not model_dir.is_dir():
        raise SignatureError(f"{model_dir} is not a model directory (a symlinked directory is refused).")
    for path in model_dir.rglob("*"):
        if path.is_symlink():
            raise SignatureError(
                f"{path} is a symlink; a model directory must hold regular files only (a link can point "
                "outside the signed directory)."
            )
        if not (path.is_file() or path.is_dir()):
            raise SignatureError(f"{path} is not a regular file or folder; refusing.")


def _describe_mismatch(model_dir: Path, statement: dict) -> str:
    """Which files were changed, added or removed (the statement is authentic at this point)."""
    signed = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    present = {
        p.relative_to(model_dir).as_posix(): p
        for p in model_dir.rglob("*")
        if p.is_file() and p.relative_to(model_dir).as_posix() != SIGNATURE_FILE
    }
    changed = sorted(
        name
        for name, path in present.items()
        if name in signed and digest_file(path, HASH_ALGORITHM) != f"{HASH_ALGORITHM}:{signed[name]}"
    )
    parts = []
    if changed:
        parts.append(f"changed file(s) {changed}")
    if added := sorted(set(present) - set(signed)):
        parts.append(f"unsigned file(s) added {added}")
    if missing := sorted(set(signed) - set(present)):
        parts.append(f"signed file(s) missing {missing}")
    return "; ".join(parts) or "contents differ from the signed manifest"


def verify_model_manifest(model_dir: Path, trusted_public_keys: Sequence[PublicKeyLike]) -> VerifiedModel:
    """Verify `model_dir` against the trusted release keys; return the signer and the signed digests."""
    model_dir = Path(model_dir)
    keys = [_load_public_key(key) for key in trusted_public_keys]
    if not keys:
        raise SignatureError("No trusted release keys are configured; refusing every model.")
    _check_tree(model_dir)
    signature = model_dir / SIGNATURE_FILE
    statement, hint = _read_bundle(signature)
    _check_statement(statement, model_dir)

    # The (unauthenticated) hint only picks which key to try; the signature itself decides.
    candidates = [key for key in keys if _library_key_hint(key) == hint] if hint else keys
    if not candidates:
        raise SignatureError(
            f"{model_dir} is signed by an unknown key (hint {hint[:16]}), not by any of the "
            f"{len(keys)} trusted release key(s) {[key_fingerprint(k) for k in keys]}. Only models "
            "signed by the promotion step's release key are accepted."
        )
    failures: list[str] = []
    for key in candidates:
        with _key_path(public_key_pem(key)) as key_path:
            config = (
                ms_verifying.Config()  # fresh per verification: verify() mutates its hashing config
                .set_hashing_config(_hashing_config())
                .use_elliptic_key_verifier(public_key=key_path)
            )
            try:
                config.verify(model_dir, signature)
            except Exception as exc:  # the library raises ValueError, InvalidSignature, ...
                message = str(exc) or type(exc).__name__
                if message.startswith("Signature mismatch"):
                    raise SignatureError(
                        f"{model_dir} does not match its signature (signed by trusted key "
                        f"{key_fingerprint(key)}): {_describe_mismatch(model_dir, statement)}. The model "
                        "was modified after promotion; do not load it, re-promote from the tracked artifact."
                    ) from exc
                failures.append(f"{key_fingerprint(key)}: {message}")
                continue
        files = {
            r["name"]: f"{r.get('algorithm', HASH_ALGORITHM)}:{r['digest']}"
            for r in statement["predicate"]["resources"]
        }
        return VerifiedModel(signer=key_fingerprint(key), files=files)
    raise SignatureError(
        f"The signature of {model_dir} does not verify with any trusted release key "
        f"({'; '.join(failures)}). It is forged or signed by an unknown key."
    )


def verify_model(model_dir: Path, trusted_public_keys: Sequence[PublicKeyLike]) -> str:
    """Verify `model_dir`; returns the fingerprint of the trusted key that signed it, or raises."""
    return verify_model_manifest(model_dir, trusted_public_keys).signer
