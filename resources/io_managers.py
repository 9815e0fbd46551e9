"""IO managers that never pickle and never hand over unverified bytes.

Dagster's default IO manager pickles every output; these replace it for every
asset. Tables are Parquet, small records are JSON. Every write goes through
the stage's own area of the encrypted store and appends a provenance entry to
the ledger (digests, inputs' digests, code version, git revision, run).
Every load takes the artifact the ledger names as the asset's newest version
(by lineage, not by file time), and refuses it unless the bytes at rest and
the decrypted content both match the recorded digests: a blocking check only
guards its own run, this guards every later one.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, BinaryIO

import pandas as pd
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from resources.digests import IntegrityError, canonical_json, digest_bytes, git_revision
from resources.integrity import IntegrityLedger, LedgerEntry
from resources.scratch import ScratchSpace
from resources.store import ArtifactStore, StoredArtifact
from resources.tables import ModelDir, TableFile
from resources.versioning import DataVersioning


def subject_of(context: OutputContext | InputContext) -> str:
    """The ledger subject of an asset: its key as a slash-joined path."""
    return context.asset_key.to_user_string()


class _LedgerIOManager(ConfigurableIOManager):
    store: ArtifactStore
    ledger: IntegrityLedger

    extension: str = ""

    def _area(self, context: OutputContext) -> tuple[str, str]:
        """The writing stage (the asset's group) and this materialisation's base path."""
        stage = context.asset_spec.group_name
        return stage, f"{stage}/{'/'.join(context.asset_key.path)}/{context.run_id}"

    def _publish(
        self,
        context: OutputContext,
        write: Callable[[BinaryIO], None],
        details: dict[str, Any],
    ) -> LedgerEntry:
        stage, base = self._area(context)
        with self.store.stage(stage).open_write(f"{base}.{self.extension}") as handle:
            write(handle)
        artifact = handle.artifact
        details = {**details, **self._extra_details(context, artifact)}
        return self._record(context, artifact, details)

    def _record(
        self, context: OutputContext, artifact: StoredArtifact, details: dict[str, Any]
    ) -> LedgerEntry:
        """Append the provenance entry and show its evidence on the materialisation."""
        spec = context.asset_spec
        entry = self.ledger.append(
            LedgerEntry(
                subject=subject_of(context),
                kind="artifact",
                path=artifact.path,
                digest=artifact.digest,
                stored_digest=artifact.stored_digest,
                size=artifact.size,
                inputs=self._input_digests(dep.asset_key.to_user_string() for dep in spec.deps),
                code_version=spec.code_version or "",
                git_revision=git_revision(),
                run_id=context.run_id,
                details=details,
            )
        )
        context.add_output_metadata(
            {
                "path": artifact.path,
                "digest": artifact.digest,
                "stored_digest": artifact.stored_digest,
                "bytes": artifact.size,
                "ledger_seq": entry.seq,
                "git_revision": entry.git_revision,
                "inputs": MetadataValue.json(entry.inputs),
                **{k: v for k, v in details.items() if isinstance(v, (int, float, str))},
            }
        )
        return entry

    def _extra_details(self, context: OutputContext, artifact: StoredArtifact) -> dict[str, Any]:
        return {}

    def _input_digests(self, subjects) -> dict[str, str]:
        inputs = {}
        for subject in subjects:
            entry = self.ledger.latest(subject)
            if entry is not None:
                inputs[subject] = entry.digest
        return inputs

    def _trusted_entry(self, context: InputContext) -> LedgerEntry:
        subject = subject_of(context)
        entry = self.ledger.latest(subject)
        if entry is None:
            raise IntegrityError(
                f"The ledger has no version of '{subject}'. Materialise it (and let its checks "
                "pass) before the assets that read it."
            )
        context.add_input_metadata({"ledger_seq": entry.seq, "digest": entry.digest})
        return entry

    def _read(self, entry: LedgerEntry) -> bytes:
        return self.store.read_verified(entry.path, digest=entry.digest, stored_digest=entry.stored_digest)


class ParquetIOManager(_LedgerIOManager):
    """Tables as encrypted Parquet, each published version also kept by DVC.

    Accepts a pandas DataFrame or a `TableFile`; an input annotated
    `TableFile` is decrypted (after verification) into the run's scratch
    folder instead of into memory.
    """

    scratch: ScratchSpace
    versioning: DataVersioning
    extension: str = "parquet"

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | TableFile) -> None:
        if isinstance(obj, TableFile):
            rows = obj.rows

            def write(handle: BinaryIO) -> None:
                with open(obj.path, "rb") as source:
                    while chunk := source.read(8 * 1024 * 1024):
                        handle.write(chunk)
        elif isinstance(obj, pd.DataFrame):
            rows = len(obj)

            def write(handle: BinaryIO) -> None:
                obj.to_parquet(handle, index=False)
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; the "
                "Parquet IO manager stores a pandas DataFrame or a TableFile."
            )
        self._publish(context, write, {"rows": rows, "dagster/row_count": rows})

    def _extra_details(self, context: OutputContext, artifact: StoredArtifact) -> dict[str, Any]:
        name = artifact.path.replace("/", "__")
        with self.store.stored_file(artifact.path, self.scratch.path(f"{name}.stored")) as stored:
            version = self.versioning.version(name, stored)
        return {"dvc_md5": version.md5}

    def load_input(self, context: InputContext) -> pd.DataFrame | TableFile:
        entry = self._trusted_entry(context)
        if context.dagster_type.typing_type is TableFile:
            dest = self.scratch.path(f"{entry.path.replace('/', '__')}")
            self.store.copy_verified(entry.path, dest, digest=entry.digest, stored_digest=entry.stored_digest)
            return TableFile(path=dest, rows=pq.ParquetFile(dest).metadata.num_rows)
        return pd.read_parquet(io.BytesIO(self._read(entry)))


class ModelDirIOManager(_LedgerIOManager):
    """Model directories (safetensors weights, JSON config, signature) stored file by file.

    Each file is an encrypted artifact with its own ledger entry (so the
    integrity audit re-hashes every one); the asset's entry carries a digest
    over the files' digests. A load verifies every file and the set of files:
    a file added to or removed from a stored model is refused.
    """

    scratch: ScratchSpace

    def handle_output(self, context: OutputContext, obj: ModelDir) -> None:
        if not isinstance(obj, ModelDir):
            raise TypeError(f"{subject_of(context)} returned {type(obj).__name__}; expected a ModelDir.")
        stage, base = self._area(context)
        files = {}
        for file in sorted(obj.path.iterdir()):
            if file.is_symlink() or not file.is_file():
                raise IntegrityError(f"{file} is not a regular file; a model directory holds files only.")
            artifact = self.store.stage(stage).write_file(f"{base}/{file.name}", file)
            self.ledger.append(
                LedgerEntry(
                    subject=f"{subject_of(context)}/{file.name}",
                    kind="artifact-file",
                    path=artifact.path,
                    digest=artifact.digest,
                    stored_digest=artifact.stored_digest,
                    size=artifact.size,
                    run_id=context.run_id,
                )
            )
            files[file.name] = asdict(artifact)
        # The bundle's own entry has no path: the audit re-hashes each file's entry instead.
        bundle = StoredArtifact(
            path="",
            digest=_bundle_digest(files),
            stored_digest=_bundle_digest(files, "stored_digest"),
            size=sum(f["size"] for f in files.values()),
        )
        self._record(context, bundle, {"folder": base, "files": files, **obj.details})

    def load_input(self, context: InputContext) -> ModelDir:
        entry = self._trusted_entry(context)
        files = entry.details["files"]
        if _bundle_digest(files) != entry.digest:
            raise IntegrityError(f"The file list of {entry.subject} does not match its recorded digest.")
        # A fresh folder per load: every consumer gets its own verified copy.
        dest = self.scratch.path(f"{entry.details['folder'].replace('/', '__')}-{uuid.uuid4().hex[:8]}")
        dest.mkdir(mode=0o700)
        for name, stored in files.items():
            self.store.copy_verified(
                stored["path"], dest / name, digest=stored["digest"], stored_digest=stored["stored_digest"]
            )
        return ModelDir(path=dest, details={k: v for k, v in entry.details.items() if k != "files"})


def _bundle_digest(files: dict[str, dict], field: str = "digest") -> str:
    return digest_bytes(canonical_json({name: stored[field] for name, stored in files.items()}))


class JsonIOManager(_LedgerIOManager):
    """Small records (reports, baselines, manifests) as encrypted canonical JSON."""

    extension: str = "json"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        payload = json.dumps(obj, sort_keys=True, indent=1, default=str).encode()
        self._publish(context, lambda handle: handle.write(payload), {})

    def load_input(self, context: InputContext) -> Any:
        return json.loads(self._read(self._trusted_entry(context)))
