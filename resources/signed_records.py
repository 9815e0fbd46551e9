"""Small JSON records signed with Ed25519 over their canonical JSON (approvals, manifests)."""

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from resources.digests import canonical_json


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign_record(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """`body` plus a `signature` field over the canonical JSON of `body`."""
    return {**body, "signature": base64.b64encode(key.sign(canonical_json(body))).decode()}


def verify_record(record: dict[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The record without its signature, if the signature verifies; raises InvalidSignature otherwise."""
    body = {k: v for k, v in record.items() if k != "signature"}
    try:
        signature = base64.b64decode(record.get("signature", ""), validate=True)
    except ValueError as error:
        raise InvalidSignature("signature is not base64") from error
    public_key.verify(signature, canonical_json(body))
    return body


def read_json_record(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or an empty record if it is not one (it then verifies against no key)."""
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
