"""The source registry: who may send data, how they prove it, how much they may send.

A record batch lands as `<landing>/<topic>/<batch_id>.jsonl`, a file batch
(DICOM images, XML notes) as a folder `<landing>/<topic>/<batch_id>/`; either
has a `<batch_id>.manifest.json` beside it naming the source, the batch, the
topic, the record count and the SHA-256 of the `.jsonl` (or of every file in
the folder) and the source's batch sequence number, with the source's
Ed25519 signature over the canonical JSON of those fields. A batch is
accepted only if its source is registered for that topic, the signature
verifies under the registered public key, the digest matches, it fits the
size limit and it was not accepted before (replay: its id is on the ledger,
or its sequence number is not above the source's last accepted one, which
the operator's trust store witnesses). Everything else is
refused with a reason, and its records are quarantined, not dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dagster import ConfigurableResource

from resources.digests import canonical_json
from resources.kafka_intake import KafkaIntake

MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 8 * 1024 * 1024  # a manifest lists a file batch's digests: 8 MiB is ~80,000 files


@dataclass(frozen=True)
class SourcePolicy:
    source_id: str
    topic: str
    public_key: Ed25519PublicKey
    max_records_per_hour: int
    max_batch_bytes: int


@dataclass(frozen=True)
class LandedBatch:
    """A batch as found in the landing zone, before any trust decision."""

    batch_id: str
    manifest_path: Path
    data_path: Path

    def read_manifest(self) -> dict:
        """The manifest, refused unread when it is larger than any real manifest (junk costs nothing)."""
        size = self.manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ValueError(f"manifest of {size} bytes > {MAX_MANIFEST_BYTES}")
        return json.loads(self.manifest_path.read_bytes())


@dataclass(frozen=True)
class BatchVerdict:
    batch: LandedBatch
    source: str
    accepted: bool
    reason: str = ""
    records: int = 0
    sha256: str = ""
    sequence: int = 0  # the source's signed batch sequence number (a replay repeats an accepted one)


@dataclass
class RateLimiter:
    """Per-source record budget for each hour of Kafka time within a collection run."""

    counts: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def admit(self, policy: SourcePolicy, timestamps_ms: list[int]) -> str:
        """Admit a whole batch or none of it; returns '' or why it was refused."""
        per_hour: dict[int, int] = defaultdict(int)
        for ts in timestamps_ms:
            per_hour[ts // 3_600_000] += 1
        for hour, n in per_hour.items():
            used = self.counts[(policy.source_id, hour)]
            if used + n > policy.max_records_per_hour:
                return (
                    f"rate limit: {policy.source_id} would send {used + n} records in one hour, "
                    f"over its limit of {policy.max_records_per_hour}"
                )
        for hour, n in per_hour.items():
            self.counts[(policy.source_id, hour)] += n
        return ""


def landed_batches(landing: Path, topic: str) -> Iterator[LandedBatch]:
    """Every batch of a topic in the landing zone, in batch-id order."""
    folder = landing / topic
    if not folder.is_dir():
        return
    for manifest in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
        batch_id = manifest.name[: -len(MANIFEST_SUFFIX)]
        records = folder / f"{batch_id}.jsonl"
        yield LandedBatch(batch_id, manifest, records if records.exists() else folder / batch_id)
    known = {m.name[: -len(MANIFEST_SUFFIX)] for m in folder.glob(f"*{MANIFEST_SUFFIX}")}
    for data in sorted(folder.iterdir()):
        batch_id = data.stem if data.suffix == ".jsonl" else data.name
        is_batch = data.suffix == ".jsonl" or (data.is_dir() and not data.name.startswith("."))
        if is_batch and batch_id not in known:
            yield LandedBatch(batch_id, folder / f"{batch_id}{MANIFEST_SUFFIX}", data)


class SourceRegistry(ConfigurableResource):
    """Known sources, their public keys and limits, and where they deliver.

    `name` is the example (``ecommerce``); the registry file defaults to
    `.runtime/config/<name>_sources.json` and the landing zone to
    `.runtime/landing/<name>/`. With `kafka` set, the e-commerce record
    topics' live window (``inbox``) is consumed from Kafka instead of the
    landing zone (`resources.kafka_intake`), through the same controls.
    """

    name: str
    path: str  # the registry file: each source's public key, topics and limits
    landing: str  # where sources deliver
    #: What happens to a batch's landed originals once it is collected: ``archive``
    #: encrypts them into the collecting stage's area of the store (digest on the
    #: ledger) and removes them from the landing zone; ``delete`` removes them.
    #: Either way the landing zone keeps nothing a sender sent.
    retention: Literal["archive", "delete"] = "archive"
    #: Where the sources publish the live window instead of the landing zone (None: the landing
    #: zone). Kafka's own topic retention, not `retention`, decides how long its messages stay.
    kafka: KafkaIntake | None = None

    def _file(self) -> Path:
        return Path(self.path)

    def landing_dir(self) -> Path:
        """Where sources deliver: `inbox/<topic>/` is pending, `reference/` is the trusted window."""
        return Path(self.landing)

    def policies(self) -> dict[str, SourcePolicy]:
        file = self._file()
        if not file.exists():
            raise FileNotFoundError(
                f"No source registry at {file}. Enrol the sources first "
                "(`make data` generates the example sources and enrols them)."
            )
        raw = json.loads(file.read_text())["sources"]
        return {
            source_id: SourcePolicy(
                source_id=source_id,
                topic=entry["topic"],
                public_key=Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"])),
                max_records_per_hour=int(entry["max_records_per_hour"]),
                max_batch_bytes=int(entry["max_batch_bytes"]),
            )
            for source_id, entry in raw.items()
        }

    def verify(self, batch: LandedBatch, topic: str, policies: dict[str, SourcePolicy]) -> BatchVerdict:
        """Authenticate one batch against the registry; never raises on bad input."""

        def refuse(reason: str, source: str = "unknown") -> BatchVerdict:
            return BatchVerdict(batch, source, accepted=False, reason=reason)

        if not batch.manifest_path.exists():
            return refuse("unsigned: batch has no manifest")
        try:
            manifest = batch.read_manifest()
        except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
            return refuse(f"unreadable manifest: {error}")
        if not isinstance(manifest, dict):
            return refuse("unreadable manifest: not a JSON object")
        source = str(manifest.get("source", "unknown"))[:64]
        policy = policies.get(source)
        if policy is None:
            return refuse(f"unknown source {source!r}", source)
        if policy.topic != topic or manifest.get("topic") != topic:
            return refuse(f"source {source!r} is not registered for topic {topic!r}", source)
        signature = manifest.get("signature")
        if not signature:
            return refuse("unsigned: manifest carries no signature", source)
        signed = {k: v for k, v in manifest.items() if k != "signature"}
        try:
            policy.public_key.verify(base64.b64decode(signature), canonical_json(signed))
        except (InvalidSignature, ValueError):
            return refuse("bad signature: not signed by the registered key", source)
        if manifest.get("batch_id") != batch.batch_id:
            return refuse("manifest names another batch", source)
        sequence = manifest.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
            return refuse("unsigned sequence: manifest carries no batch sequence number", source)
        if not batch.data_path.exists():
            return refuse("manifest without data", source)
        check = _verify_files if isinstance(manifest.get("files"), dict) else _verify_records
        why, sha256 = check(batch.data_path, manifest, policy)
        if why:
            return refuse(why, source)
        return BatchVerdict(
            batch,
            source,
            accepted=True,
            records=int(manifest.get("records", 0)),
            sha256=sha256,
            sequence=sequence,
        )


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _verify_records(data: Path, manifest: dict, policy: SourcePolicy) -> tuple[str, str]:
    """A record batch: one JSON-lines file whose SHA-256 the manifest signs."""
    if not data.is_file():
        return "manifest without data", ""
    size = data.stat().st_size
    if size > policy.max_batch_bytes:
        return f"oversized batch: {size} bytes > {policy.max_batch_bytes}", ""
    sha256 = _sha256(data)
    if manifest.get("digest", {}).get("value") != sha256:
        return "digest mismatch: data changed after signing", ""
    return "", sha256


def _verify_files(folder: Path, manifest: dict, policy: SourcePolicy) -> tuple[str, str]:
    """A file batch: a folder whose exact file set and each file's SHA-256 the manifest signs.

    The batch digest is the SHA-256 of the canonical JSON of the signed file map.
    """
    if not folder.is_dir():
        return "manifest without data", ""
    signed: dict = manifest["files"]
    present = {p.name for p in folder.iterdir()}
    if present != set(signed):
        extra, missing = sorted(present - set(signed)), sorted(set(signed) - present)
        return f"file set mismatch: unsigned {extra[:5]}, missing {missing[:5]}", ""
    files = [folder / name for name in signed]
    if any(f.is_symlink() or not f.is_file() for f in files):
        return "file set mismatch: a batch holds regular files only", ""
    size = sum(f.stat().st_size for f in files)
    if size > policy.max_batch_bytes:
        return f"oversized batch: {size} bytes > {policy.max_batch_bytes}", ""
    changed = [f.name for f in files if _sha256(f) != signed[f.name]]
    if changed:
        return f"digest mismatch: {changed[:5]} changed after signing", ""
    return "", hashlib.sha256(canonical_json(signed)).hexdigest()
