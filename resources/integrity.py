"""The append-only, hash-chained provenance ledger.

The ledger is a table in a real database (a SQLite file by default, any
SQLAlchemy URL such as Postgres in production). Every entry carries the MAC
of the entry before it and a MAC over its own fields, keyed by a secret from
the key provider: rewriting, reordering or deleting an entry breaks the chain,
and recomputing the chain needs a key an attacker with database access lacks.

The MAC key rotates (`rotate_mac_key`): each entry records the version of the
key that sealed it (`ledger-mac`, then `ledger-mac.v2`, ...), and the rotation
is itself an entry sealed with the new key, so old entries keep verifying with
the key that sealed them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from resources.digests import IntegrityError, canonical_json
from resources.keys import KeyProvider
from resources.trust_store import Checkpoint, TrustStore, TrustStoreError

GENESIS_MAC = "0" * 64
ORIGINAL_MAC_KEY_VERSION = 1  # `ledger-mac`: every entry written before rotation existed
KEY_ROTATION = "key-rotation"


def mac_key_name(version: int) -> str:
    return "ledger-mac" if version == ORIGINAL_MAC_KEY_VERSION else f"ledger-mac.v{version}"


@dataclass(frozen=True)
class LedgerEntry:
    """One provenance record: what was written, from what, by which code, when."""

    subject: str
    kind: str
    digest: str
    path: str = ""
    stored_digest: str = ""
    size: int = 0
    inputs: dict[str, str] = field(default_factory=dict)
    code_version: str = ""
    git_revision: str = ""
    run_id: str = ""
    sources: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    seq: int = 0
    prev_mac: str = ""
    mac_key_version: int = ORIGINAL_MAC_KEY_VERSION
    mac: str = ""

    def body(self) -> dict[str, Any]:
        """The fields the MAC covers (everything except the MAC itself)."""
        body = asdict(self)
        body.pop("mac")
        if self.mac_key_version == ORIGINAL_MAC_KEY_VERSION:
            body.pop("mac_key_version")  # entries sealed before rotation existed did not cover it
        return body


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    head_seq: int
    head_mac: str
    problems: list[str]


_metadata = sa.MetaData()
_entries = sa.Table(
    "ledger_entries",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("subject", sa.String(512), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False, index=True),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("digest", sa.String(128), nullable=False),
    sa.Column("stored_digest", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("code_version", sa.String(128), nullable=False),
    sa.Column("git_revision", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("sources", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    # UNIQUE on prev_mac: two writers that read the same head cannot both append.
    sa.Column("prev_mac", sa.String(64), nullable=False, unique=True),
    sa.Column("mac", sa.String(64), nullable=False),
    sa.Column("mac_key_version", sa.Integer, nullable=False, server_default=str(ORIGINAL_MAC_KEY_VERSION)),
)
_JSON_COLUMNS = ("inputs", "sources", "details")


def _has_mac_key_version(engine: sa.Engine) -> bool:
    return "mac_key_version" in {c["name"] for c in sa.inspect(engine).get_columns(_entries.name)}


def _add_mac_key_version(engine: sa.Engine) -> None:
    """Upgrade a ledger table made before MAC key rotation: its entries all used the original key."""
    if _has_mac_key_version(engine):
        return
    statement = (
        f"ALTER TABLE {_entries.name} ADD COLUMN mac_key_version INTEGER NOT NULL "
        f"DEFAULT {ORIGINAL_MAC_KEY_VERSION}"
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    except sa.exc.DBAPIError:
        if not _has_mac_key_version(engine):  # else another process added it first
            raise


class LedgerUnavailableError(RuntimeError):
    """The ledger's database cannot be reached or refuses the configured credentials."""


def _row_to_entry(row: sa.Row) -> LedgerEntry:
    values = dict(row._mapping)
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name])
    return LedgerEntry(**values)


class IntegrityLedger(ConfigurableResource):
    """Append-only, MAC-chained provenance ledger in a SQL database.

    Protects against silent history rewrites: `verify_chain` detects an entry
    that was edited, reordered or deleted. Every append also publishes a
    signed checkpoint of the new head to the witness in the operator's trust
    store (`trust_store`, outside anything the pipeline can rewrite), so a
    deleted tail, or an older ledger restored along with the Dagster home, is
    detected against the newest checkpoint.
    """

    key_provider: KeyProvider
    url: str  # SQLAlchemy URL: sqlite:///<home>/ledger/ledger.sqlite, postgresql+psycopg://...
    trust_store: str  # the operator's trust store folder, where the witness lives
    algorithm: str = "blake3"

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def _db(self) -> sa.Engine:
        if self._engine is None:
            engine = sa.create_engine(self.url)
            try:
                _metadata.create_all(engine)
                _add_mac_key_version(engine)
            except sa.exc.OperationalError as error:
                raise LedgerUnavailableError(
                    f"The ledger database at {sa.engine.make_url(self.url)!r} cannot be used: "
                    f"{str(error.orig).strip()}. Check the ledger URL (PIPELINE_LEDGER_URL: host, port, "
                    "database, role and password) and that the server runs; nothing was written."
                ) from error
            self._engine = engine
        return self._engine

    def _mac(self, entry: LedgerEntry) -> str:
        key = self.key_provider.secret(mac_key_name(entry.mac_key_version))
        return hmac.new(key, canonical_json(entry.body()), hashlib.sha256).hexdigest()

    def append(self, entry: LedgerEntry, *, retries: int = 5) -> LedgerEntry:
        """Append an entry at the head of the chain; returns it with seq and MACs set."""
        return self._append(entry, rotate=False, retries=retries)

    def rotate_mac_key(self, *, retries: int = 5) -> LedgerEntry:
        """Seal every later entry with a fresh MAC key; returns the rotation entry.

        The rotation entry is chained onto the old head and sealed with the new
        key, so the history sealed with the old key is pinned: whoever holds
        only the old key can neither rewrite it nor append after it
        (`verify_chain` refuses an entry sealed with a retired key).
        """
        rotation = LedgerEntry(subject="ledger/mac-key", kind=KEY_ROTATION, digest="")
        return self._append(rotation, rotate=True, retries=retries)

    def _append(self, entry: LedgerEntry, *, rotate: bool, retries: int) -> LedgerEntry:
        for _ in range(retries):
            head = self.head()
            seq = head.seq + 1 if head else 1
            prev_mac = head.mac if head else GENESIS_MAC
            version = head.mac_key_version if head else ORIGINAL_MAC_KEY_VERSION
            if rotate:
                version += 1
            created_at = entry.created_at or datetime.now(UTC).isoformat()
            draft = LedgerEntry(
                **{
                    **entry.body(),
                    "seq": seq,
                    "prev_mac": prev_mac,
                    "created_at": created_at,
                    "mac_key_version": version,
                }
            )
            sealed = LedgerEntry(**draft.body(), mac=self._mac(draft))
            row = asdict(sealed)
            for name in _JSON_COLUMNS:
                row[name] = json.dumps(row[name], sort_keys=True)
            try:
                with self._db().begin() as conn:
                    conn.execute(_entries.insert().values(**row))
            except sa.exc.IntegrityError:
                continue  # another writer appended first; chain onto its entry
            self._witness().witness_checkpoint(Checkpoint(sealed.seq, sealed.mac), self._witness_key())
            return sealed
        raise IntegrityError("Could not append to the ledger: too many concurrent writers.")

    def _witness(self) -> TrustStore:
        return TrustStore(Path(self.trust_store))

    def _witness_key(self) -> Ed25519PrivateKey:
        return self.key_provider.signing_key("ledger-witness")

    def checkpoints(self) -> list[Checkpoint]:
        """The heads the witness saw, oldest first."""
        return self._witness().checkpoints(self._witness_key().public_key())

    def head(self) -> LedgerEntry | None:
        with self._db().connect() as conn:
            row = conn.execute(_entries.select().order_by(_entries.c.seq.desc()).limit(1)).first()
        return _row_to_entry(row) if row else None

    def latest(self, subject: str, kind: str = "artifact") -> LedgerEntry | None:
        """The newest entry for a subject: what a consumer must load, chosen by lineage."""
        query = (
            _entries.select()
            .where(_entries.c.subject == subject, _entries.c.kind == kind)
            .order_by(_entries.c.seq.desc())
            .limit(1)
        )
        with self._db().connect() as conn:
            row = conn.execute(query).first()
        return _row_to_entry(row) if row else None

    def entries(self, kind: str | None = None) -> Iterator[LedgerEntry]:
        query = _entries.select().order_by(_entries.c.seq)
        if kind:
            query = query.where(_entries.c.kind == kind)
        with self._db().connect() as conn:
            for row in conn.execute(query):
                yield _row_to_entry(row)

    def latest_per_path(self) -> list[LedgerEntry]:
        """The newest entry for every stored path: what the integrity audit re-hashes."""
        newest: dict[str, LedgerEntry] = {}
        for entry in self.entries():
            if entry.path:
                newest[entry.path] = entry
        return list(newest.values())

    def verify_chain(self) -> ChainReport:
        """Walk the whole chain, then hold it against every head the witness saw.

        A witnessed head that is gone, or that is no longer the entry it was,
        means history was truncated or replaced (an older ledger restored).
        """
        problems: list[str] = []
        macs: dict[int, str] = {}
        prev_mac, expected_seq, last = GENESIS_MAC, 1, None
        version = ORIGINAL_MAC_KEY_VERSION
        for entry in self.entries():
            if entry.seq != expected_seq:
                problems.append(f"entry #{expected_seq} is missing (next is #{entry.seq})")
            if entry.prev_mac != prev_mac:
                problems.append(f"entry #{entry.seq} does not follow the entry before it")
            # The key version moves only forward, one step, at a rotation entry.
            if entry.kind == KEY_ROTATION:
                version += 1
            if entry.mac_key_version != version:
                problems.append(
                    f"entry #{entry.seq} ({entry.subject}) claims MAC key version {entry.mac_key_version} "
                    f"where the chain is at version {version}: it was altered or forged with a retired key"
                )
            elif not hmac.compare_digest(entry.mac, self._mac(entry)):
                problems.append(f"entry #{entry.seq} ({entry.subject}) was altered after it was written")
            macs[entry.seq] = entry.mac
            prev_mac, expected_seq, last = entry.mac, entry.seq + 1, entry
        count = expected_seq - 1
        try:
            checkpoints = self.checkpoints()
        except TrustStoreError as error:
            checkpoints, problems = [], [*problems, f"the witness is damaged: {error}"]
        newest = max((c.count for c in checkpoints), default=0)
        if newest > count:
            problems.append(
                f"the witness saw {newest} entries but the ledger holds {count}: its tail was deleted "
                "or an older ledger was restored"
            )
        replaced = [c.count for c in checkpoints if c.count in macs and macs[c.count] != c.head_mac]
        if replaced:
            problems.append(f"entries {replaced[:5]} are not the entries the witness saw (history replaced)")
        return ChainReport(
            ok=not problems,
            entries=count,
            head_seq=last.seq if last else 0,
            head_mac=last.mac if last else GENESIS_MAC,
            problems=problems,
        )


def create_ledger_tables(url: str) -> None:
    """Create the ledger's tables as their owner (a deployment's set-up), so the role the pipeline
    writes with needs no right to create, alter or drop them."""
    engine = sa.create_engine(url)
    try:
        _metadata.create_all(engine)
        _add_mac_key_version(engine)
    finally:
        engine.dispose()
