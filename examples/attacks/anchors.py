"""ATTACK SIMULATION: attacks on the trust anchors themselves, shared by both examples.

The attacker here can write the release folder, the ledger and the Dagster
home, but not the operator's trust store. Each scenario goes for what used
to decide trust beside the data it protects:

- **trust-store injection**: the attacker's own public key appended to every
  trust list the pipeline's folders could hold, and a well-formed next
  release signed with it;
- **rollback by deletion**: the newest release deleted and `current` pointed
  at the one before, so that the folder's newest *is* the old one;
- **ledger truncation + replay**: the ledger entries of the last collection
  deleted, and its validly signed batches (copied in transit) landed again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from examples.attacks.lab import Scenario
from examples.attacks.releases import publish_signed_by_unknown_key, then_audit
from examples.runs import PipelineInstance
from resources.signing import public_key_pem

TRUST_FILE_NAMES = ("trusted-release-keys.json", "trusted_keys.json")


def plant_key_and_publish(instance: PipelineInstance, model_name: str) -> None:
    """Append an attacker key to every trust list in reach, then publish a release signed with it."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    pem = public_key_pem(attacker).decode()
    releases = instance.defs.resources["releases"]
    for folder in (releases.root, releases.root / model_name, instance.home / "config", instance.home):
        for name in TRUST_FILE_NAMES:
            path = folder / name
            keys = json.loads(path.read_text()).get("trusted_release_keys", []) if path.exists() else []
            path.write_text(json.dumps({"trusted_release_keys": [*keys, pem]}))
    publish_signed_by_unknown_key(instance, model_name, attacker)


def delete_newest_release(instance: PipelineInstance, model_name: str) -> None:
    """Delete the newest release and point `current` at the one before it."""
    releases = instance.defs.resources["releases"]
    newest, *_ = sorted(releases.versions(model_name), reverse=True)
    folder = releases.root / model_name / f"v{newest}"
    folder.chmod(0o755)
    shutil.rmtree(folder)
    (releases.root / model_name / "current.json").write_text(json.dumps({"version": newest - 1}))


def captured_folder(instance: PipelineInstance) -> Path:
    """Where the attacker keeps the batches copied off the landing zone before collection."""
    return instance.home.with_name(f"{instance.home.name}-captured")


def capture_inbox(instance: PipelineInstance) -> None:
    """Copy the batches waiting in the inbox, as an attacker on the delivery path would."""
    inbox = instance.defs.resources["sources"].landing_dir() / "inbox"
    shutil.copytree(inbox, captured_folder(instance))


def truncate_and_replay(collection: list[str]) -> Callable[[PipelineInstance], None]:
    """Delete the ledger from the last collection run on, land the captured batches again, collect, audit.

    Collection retires the originals from the landing zone, so the attacker
    replays the copies taken in transit (`capture_inbox`).
    """

    def mount(instance: PipelineInstance) -> None:
        batches = list(instance.ledger.entries(kind="batch"))
        run_id = batches[-1].run_id
        first = min(e.seq for e in instance.ledger.entries() if e.run_id == run_id)
        with instance.ledger._db().begin() as connection:  # the attacker writes the ledger's database
            connection.execute(sa.text("DELETE FROM ledger_entries WHERE seq >= :first"), {"first": first})
        inbox = instance.defs.resources["sources"].landing_dir() / "inbox"
        shutil.copytree(captured_folder(instance), inbox, dirs_exist_ok=True)
        instance.run_selection(collection)
        instance.run(f"{instance.example}_audit")

    return mount


def anchor_scenarios(
    example: str,
    model_name: str,
    collection: list[str],
    one_release: Callable[[PipelineInstance], None],
    two_releases: Callable[[PipelineInstance], None],
) -> list[Scenario]:
    """The trust-anchor scenarios against `example`'s own release line, ledger and sources."""

    def capture_then_collect(instance: PipelineInstance) -> None:
        capture_inbox(instance)
        assert instance.run_selection(collection).success, "the clean collection failed"

    return [
        Scenario(
            f"{example}/trust-store-injection",
            "trust-anchor attack",
            "the attacker's key appended to every trust list in the pipeline's folders, a release signed "
            "with it published as the next version",
            then_audit(example, model_name, plant_key_and_publish),
            one_release,
        ),
        Scenario(
            f"{example}/rollback-by-deletion",
            "rollback",
            "the newest release deleted and `current` pointed at the validly signed one before it",
            then_audit(example, model_name, delete_newest_release),
            two_releases,
        ),
        Scenario(
            f"{example}/ledger-truncation-replay",
            "trust-anchor attack",
            "the ledger entries of the last collection deleted and its signed batches landed again",
            truncate_and_replay(collection),
            capture_then_collect,
        ),
    ]
