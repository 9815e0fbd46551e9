"""ATTACK SIMULATION: an insider who holds the pipeline's credentials approves their own transformation code.

The insider can do whatever the pipeline's run-time identity can: take or
mint keys through its key provider, write its runtime home (where the
approved-code manifest lives) and append to the operator's trust store. They
swap in a transformation of their own, list a key from the pipeline's key
provider as a code approver (there is no approval key in that keyset to take
any more, so they mint one under the name it used to have), sign a manifest
approving the swapped-in code with it, and let the scheduled lifecycle run.
Processing must refuse: only a key the operator listed, with the operator's
signature, approves code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from unittest import mock

from examples.attacks.lab import Scenario
from examples.runs import PipelineInstance
from pipelines.approve_code import approved_transforms
from resources.code_approval import POWER, sign_code_manifest
from resources.signed_records import public_key_b64, sign_record

PIPELINE_KEY_NAME = "code-approval"  # the approval key's name when it lived in the pipeline's keyset


def self_approve(instance: PipelineInstance) -> None:
    """List a key the pipeline holds as a code approver, and approve the code now loaded with it."""
    key = instance.defs.resources["key_provider"].signing_key(PIPELINE_KEY_NAME)
    entry = {
        "power": POWER,
        "public_key": public_key_b64(key),
        "added_by": "insider",
        "at": datetime.now(UTC).isoformat(),
    }
    instance.trust._approvers.append(sign_record(entry, key))  # the pipeline may append to the store
    instance.defs.resources["approvals"].record(sign_code_manifest(approved_transforms(), "insider", key))


def insider_scenario(example: str, transform: str, replacement: Callable) -> Scenario:
    """The insider's attack on `example`: its transformation `transform` swapped for `replacement`."""

    def mount(instance: PipelineInstance) -> None:
        with mock.patch(f"domain.{example}.transforms.{transform}", replacement):
            self_approve(instance)
            instance.lifecycle()

    return Scenario(
        f"{example}/insider-self-approval",
        "insider self-approval",
        f"`{transform}` swapped for the insider's copy, approved in a manifest signed with a key from the "
        "pipeline's own key provider, and that key appended to the trust store's approver list",
        mount,
    )
