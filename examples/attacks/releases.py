"""ATTACK SIMULATION: attacks on a published release, shared by both examples.

Each one changes the release folder a server loads from, as an attacker
with write access to it could, and then runs the example's nightly audit,
whose `release_loads_securely` check re-verifies the serving release.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from examples.attacks.lab import Scenario
from examples.attacks.trojan_payloads import malicious_pickle
from examples.runs import PipelineInstance
from resources.signing import CONFIG_FILE, SIGNATURE_FILE, WEIGHTS_FILE, sign_model


def _writable(release: Path) -> None:
    """Undo the read-only bits `publish` set (the attacker has write access to the folder)."""
    release.chmod(0o755)
    for file in release.iterdir():
        file.chmod(0o644)


def swap_in_pickle(instance: PipelineInstance, model_name: str) -> None:
    """Replace the serving release's weights with a pickle that runs a shell command when loaded."""
    release = instance.defs.resources["releases"].current(model_name)
    _writable(release)
    (release / WEIGHTS_FILE).write_bytes(malicious_pickle(instance.home / "trojan-ran"))


def publish_signed_by_unknown_key(
    instance: PipelineInstance, model_name: str, key: ec.EllipticCurvePrivateKey | None = None
) -> None:
    """Publish a well-formed copy of the release as the next version, signed by the attacker's own key."""
    releases = instance.defs.resources["releases"]
    current = releases.current(model_name)
    version = releases.next_version(model_name)
    forged = current.with_name(f"v{version}")
    shutil.copytree(current, forged)
    _writable(forged)
    config = json.loads((forged / CONFIG_FILE).read_text())
    (forged / CONFIG_FILE).write_text(json.dumps({**config, "version": version}, sort_keys=True))
    (forged / SIGNATURE_FILE).unlink()
    sign_model(forged, key or ec.generate_private_key(ec.SECP256R1()))
    (current.parent / "current.json").write_text(json.dumps({"version": version}))


def roll_back(instance: PipelineInstance, model_name: str) -> None:
    """Point `current` at the oldest release: validly signed, but superseded."""
    releases = instance.defs.resources["releases"]
    oldest = min(releases.versions(model_name))
    (releases.current(model_name).parent / "current.json").write_text(json.dumps({"version": oldest}))


def then_audit(example: str, model_name: str, change) -> Callable[[PipelineInstance], None]:
    def mount(instance: PipelineInstance) -> None:
        change(instance, model_name)
        instance.run(f"{example}_audit")

    return mount


def trojan_scenarios(
    example: str, model_name: str, one_release: Callable[[PipelineInstance], None]
) -> list[Scenario]:
    """The trojan-model scenarios against `example`'s own released model."""
    return [
        Scenario(
            f"{example}/trojan-pickle",
            "trojan model",
            "the serving release's weights replaced by a pickle that runs a shell command on load",
            then_audit(example, model_name, swap_in_pickle),
            one_release,
        ),
        Scenario(
            f"{example}/trojan-unknown-signer",
            "trojan model",
            "a well-formed model published as the next version, signed by a key the servers do not trust",
            then_audit(example, model_name, publish_signed_by_unknown_key),
            one_release,
        ),
    ]


def rollback_scenario(
    example: str, model_name: str, two_releases: Callable[[PipelineInstance], None]
) -> Scenario:
    """The rollback scenario: `current` pointed back at `example`'s validly signed v1 after v2."""
    return Scenario(
        f"{example}/rollback",
        "rollback",
        "`current` pointed back at v1, validly signed but superseded by v2",
        then_audit(example, model_name, roll_back),
        two_releases,
    )
