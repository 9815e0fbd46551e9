"""The operator's trust store: what decides trust, kept apart from what it protects.

The pipeline's writers (collection, processing, training, promotion) and
whoever can write the release folder, the ledger or the Dagster home must
not be able to change which keys are trusted, how far the ledger reached,
which release is newest or which batches were already accepted. Those
anchors live here, in a folder of their own (locally: owned by the operator,
outside `$PIPELINE_HOME`; in production a separate database role with INSERT
only, or an object-lock bucket, and a KMS key per role). Two kinds of record:

- **Operator records**, written only by explicit operator commands: the
  trusted release public keys (`make trust-release-key`), the approver keys
  per power (`python -m pipelines.operator trust-approver code|retraining`)
  and the operator's signed acknowledgements that clear an alarm
  (`make acknowledge-alarm`). Promotion never adds a key; approver entries and
  acknowledgements carry the operator key's signature, so a process that can
  only append here (the pipeline) cannot add an approver or clear an alarm.
- **The witness**: append-only, hash-chained logs the pipeline may add to but
  never rewrite. A signed checkpoint of the ledger head after every ledger
  append; every promoted release (version, config digest, predecessor), whose
  newest entry is the rollback floor; every source's highest accepted batch
  sequence number; every alarm raised. Appending cannot lower a floor or
  remove a checkpoint, so the worst an appender can do is refuse service.

No Dagster here: servers and the isolated worker's parent read it too.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from resources.atomic import atomic_write_bytes
from resources.digests import canonical_json
from resources.runtime import REPO_ROOT
from resources.signed_records import public_key_b64, sign_record, verify_record

GENESIS = "0" * 64
# What a person approves with a key of their own; each power's keys are listed apart.
APPROVAL_POWERS = ("code", "retraining")


class TrustStoreError(Exception):
    """The trust store itself is damaged (a witness log's chain is broken) or not set up."""


@dataclass(frozen=True)
class Checkpoint:
    """The ledger's head as witnessed: `count` entries, the last with `head_mac`."""

    count: int
    head_mac: str


@dataclass(frozen=True)
class ReleaseRecord:
    model: str
    version: int
    config_digest: str
    predecessor: str  # the previous release's config digest ("" for the first)


@dataclass(frozen=True)
class Alarm:
    alarm_id: str  # the witness entry's hash: what an acknowledgement names
    subject: str
    reason: str
    raised_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _raw_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


class WitnessLog:
    """One append-only JSON-lines log; each line carries the hash of the line before it."""

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def records(self) -> list[dict[str, Any]]:
        """Every record, oldest first; raises TrustStoreError if the chain was broken."""
        if not self.path.exists():
            return []
        records, previous = [], GENESIS
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            entry = json.loads(line)
            body = entry["body"]
            if entry["prev"] != previous or entry["hash"] != _hash(previous, body):
                raise TrustStoreError(f"{self.path} line {number} does not follow the line before it")
            records.append({**body, "_hash": entry["hash"]})
            previous = entry["hash"]
        return records

    def _last_hash(self) -> str:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return GENESIS
        with open(self.path, "rb") as handle:
            handle.seek(max(0, self.path.stat().st_size - 64 * 1024))
            return json.loads(handle.read().splitlines()[-1])["hash"]

    def append(self, body: dict[str, Any]) -> str:
        """Append `body`; returns its hash (its identity in this log)."""
        with self._locked():
            previous = self._last_hash()
            digest = _hash(previous, body)
            line = canonical_json({"prev": previous, "body": body, "hash": digest}) + b"\n"
            with open(self.path, "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            return digest


def _hash(previous: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(previous.encode() + canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class TrustStore:
    """The trust store under `root` (see the module docstring for who writes what)."""

    root: Path

    @classmethod
    def from_environment(cls) -> TrustStore:
        """The store an entry point uses: `$PIPELINE_TRUST_STORE`, else `.trust/` in the repository."""
        return cls(Path(os.environ.get("PIPELINE_TRUST_STORE") or REPO_ROOT / ".trust"))

    def _log(self, name: str) -> WitnessLog:
        return WitnessLog(self.root / "witness" / f"{name}.jsonl")

    @property
    def _keys_file(self) -> Path:
        return self.root / "operator" / "release-keys.json"

    # -- operator records ------------------------------------------------------------------

    def trust_release_key(self, public_key_pem: bytes, operator: str) -> None:
        """List a release public key as trusted: an operator's act, never the pipeline's."""
        entries = self._key_entries()
        if public_key_pem.decode() not in (e["pem"] for e in entries):
            entries.append({"pem": public_key_pem.decode(), "added_by": operator, "added_at": _now()})
        atomic_write_bytes(self._keys_file, json.dumps({"release_keys": entries}, indent=1).encode())

    def _key_entries(self) -> list[dict[str, str]]:
        if not self._keys_file.exists():
            return []
        return list(json.loads(self._keys_file.read_text())["release_keys"])

    def trusted_release_keys(self) -> list[bytes]:
        return [e["pem"].encode() for e in self._key_entries()]

    def set_operator_key(self, public_key: Ed25519PublicKey) -> None:
        """Record the key whose signature clears an alarm (set once, when the store is created)."""
        path = self.root / "operator" / "operator-key.json"
        if path.exists():
            if json.loads(path.read_text())["public_key"] != _raw_public(public_key):
                raise TrustStoreError(f"{path} already names another operator key; replacing it is manual")
            return
        atomic_write_bytes(path, json.dumps({"public_key": _raw_public(public_key)}).encode())

    def _operator_key(self) -> Ed25519PublicKey | None:
        path = self.root / "operator" / "operator-key.json"
        if not path.exists():
            return None
        raw = base64.b64decode(json.loads(path.read_text())["public_key"])
        return Ed25519PublicKey.from_public_bytes(raw)

    def acknowledge(self, alarm_id: str, operator: str, key: Ed25519PrivateKey, note: str) -> None:
        """Clear an alarm with the operator's signature over its id (an operator's act)."""
        body = {"alarm_id": alarm_id, "operator": operator, "note": note, "at": _now()}
        signed = {**body, "signature": base64.b64encode(key.sign(canonical_json(body))).decode()}
        WitnessLog(self.root / "operator" / "acknowledgements.jsonl").append(signed)

    def _operator_signed(self, log: WitnessLog, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """The records of `log` whose `fields` the operator key signed; any other record is ignored."""
        key = self._operator_key()
        if key is None:
            return
        for record in log.records():
            body = {k: record[k] for k in fields}
            with contextlib.suppress(InvalidSignature, ValueError):
                key.verify(base64.b64decode(record["signature"]), canonical_json(body))
                yield record

    def _acknowledgements(self) -> dict[str, str]:
        """Alarm id -> when the operator acknowledged it, for acknowledgements the operator key signed."""
        log = WitnessLog(self.root / "operator" / "acknowledgements.jsonl")
        return {
            r["alarm_id"]: r["at"] for r in self._operator_signed(log, ("alarm_id", "operator", "note", "at"))
        }

    @property
    def _approvers(self) -> WitnessLog:
        return WitnessLog(self.root / "operator" / "approver-keys.jsonl")

    def trust_approver_key(
        self, power: str, public_key: Ed25519PublicKey, operator: str, operator_key: Ed25519PrivateKey
    ) -> None:
        """List `public_key` as a `power` approver ("code" or "retraining"): an operator's act.

        Protects against self-approval: the entry is signed with the operator
        key, so the pipeline, which may append to the store, cannot list a key
        it holds; a key already listed for the other power (or the operator's
        own) is refused, so no single holder approves both the code and the
        data a model learns from.
        """
        if power not in APPROVAL_POWERS:
            raise ValueError(
                f"Unknown approval power {power!r}; the powers are {', '.join(APPROVAL_POWERS)}."
            )
        recorded = self._operator_key()
        if recorded is None or public_key_b64(recorded) != public_key_b64(operator_key):
            raise TrustStoreError(
                f"Only the operator key recorded in {self.root / 'operator'} may list approvers; this key is "
                "not it. Run the command as the operator (`$PIPELINE_OPERATOR_KEY`)."
            )
        raw = public_key_b64(public_key)
        if raw == public_key_b64(recorded):
            raise TrustStoreError(
                "The operator's own key cannot approve: give each reviewer a key of their own."
            )
        for other in APPROVAL_POWERS:
            if raw in (public_key_b64(k) for k in self.trusted_approver_keys(other)):
                if other == power:
                    return
                raise TrustStoreError(
                    f"That key already approves {other}; {power} approval needs a key of its own, held by "
                    f"its own reviewer (`python -m pipelines.approve_{power} --public-key` makes one)."
                )
        body = {"power": power, "public_key": raw, "added_by": operator, "at": _now()}
        self._approvers.append(sign_record(body, operator_key))

    def trusted_approver_keys(self, power: str) -> list[Ed25519PublicKey]:
        """The keys whose signature approves `power`: entries the operator key signed, no others."""
        fields = ("power", "public_key", "added_by", "at")
        return [
            Ed25519PublicKey.from_public_bytes(base64.b64decode(r["public_key"]))
            for r in self._operator_signed(self._approvers, fields)
            if r["power"] == power
        ]

    def approved_by(self, power: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """`record`'s body if a `power` approver key listed here signed it, else None (edited, or
        signed by a key the operator never listed)."""
        for key in self.trusted_approver_keys(power):
            with contextlib.suppress(InvalidSignature, ValueError):
                return verify_record(record, key)
        return None

    def acknowledged_at(self, subject_suffix: str) -> str | None:
        """When the operator last acknowledged an alarm whose subject ends with `subject_suffix`."""
        cleared = self._acknowledgements()
        times = [
            cleared[r["_hash"]]
            for r in self._log("alarms").records()
            if r["_hash"] in cleared and r["subject"].endswith(subject_suffix)
        ]
        return max(times, default=None)

    # -- the witness -------------------------------------------------------------------------

    def witness_checkpoint(self, checkpoint: Checkpoint, signer: Ed25519PrivateKey) -> None:
        body = {"count": checkpoint.count, "head_mac": checkpoint.head_mac, "at": _now()}
        signature = signer.sign(canonical_json(body))
        self._log("ledger").append({**body, "signature": base64.b64encode(signature).decode()})

    def checkpoints(self, verifier: Ed25519PublicKey) -> list[Checkpoint]:
        """The witnessed ledger heads the ledger is held to, oldest first; one with a bad signature raises.

        Heads witnessed before the operator's newest acknowledgement of a ledger
        alarm are set aside: by signing, the operator accepted the ledger as it
        then was (say, a tail lost with an attacked host), and nothing else can.
        """
        accepted_at = self.acknowledged_at("/ledger")
        found = []
        for record in self._log("ledger").records():
            if accepted_at and record["at"] <= accepted_at:
                continue
            body = {k: record[k] for k in ("count", "head_mac", "at")}
            try:
                verifier.verify(base64.b64decode(record["signature"]), canonical_json(body))
            except (InvalidSignature, ValueError) as error:
                raise TrustStoreError(f"a ledger checkpoint is not signed by the ledger's key: {body}") from (
                    error
                )
            found.append(Checkpoint(record["count"], record["head_mac"]))
        return found

    def record_release(self, release: ReleaseRecord) -> None:
        self._log("releases").append({**asdict(release), "at": _now()})

    def releases(self, model: str) -> list[ReleaseRecord]:
        return [
            ReleaseRecord(r["model"], r["version"], r["config_digest"], r["predecessor"])
            for r in self._log("releases").records()
            if r["model"] == model
        ]

    def release_floor(self, model: str) -> ReleaseRecord | None:
        """The newest release on record: anything older is a rollback, wherever the folder points."""
        return max(self.releases(model), key=lambda r: r.version, default=None)

    def record_sequence(self, source: str, sequence: int, batch_id: str) -> None:
        self._log("sequences").append({"source": source, "sequence": sequence, "batch_id": batch_id})

    def last_sequences(self) -> dict[str, int]:
        """Each source's highest accepted batch sequence number."""
        highest: dict[str, int] = {}
        for record in self._log("sequences").records():
            highest[record["source"]] = max(highest.get(record["source"], 0), record["sequence"])
        return highest

    def raise_alarm(self, subject: str, reason: str) -> str:
        return self._log("alarms").append({"subject": subject, "reason": reason, "raised_at": _now()})

    def open_alarms(self, subject: str | None = None) -> list[Alarm]:
        """Alarms no operator has acknowledged with a valid signature."""
        cleared = self._acknowledgements()
        return [
            Alarm(r["_hash"], r["subject"], r["reason"], r["raised_at"])
            for r in self._log("alarms").records()
            if r["_hash"] not in cleared and (subject is None or r["subject"] == subject)
        ]
