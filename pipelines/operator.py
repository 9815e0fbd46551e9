"""The operator's commands on the trust store: what only a person with the operator key may do.

    python -m pipelines.operator trust-release-key        list the release process's public key as trusted
    python -m pipelines.operator trust-approver code|retraining KEY
                                                          list a reviewer's public key (base64, or a file
                                                          holding it or its PEM) as an approver of that power
    python -m pipelines.operator alarms                   the open alarms
    python -m pipelines.operator acknowledge ID --note …  clear one alarm, signed with the operator key

The pipeline never runs these: promotion adds no trusted key, the pipeline
lists no approver (each approver entry is signed with the operator key), and
a failed audit or a refused release stays failed until an operator
acknowledges it. Reviewers hold their own keys (`make approve-code`,
`make approve-retraining`); the operator lists only their public halves.
The operator's private key lives outside the pipeline's home and the trust
store (`$PIPELINE_OPERATOR_KEY`, default `.operator/operator.key`); the trust
store holds its public half, recorded when the key is first made.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pipelines.environment import resources_for
from resources.keys import held_signing_key
from resources.runtime import REPO_ROOT, RuntimeHome
from resources.signed_records import public_key_b64
from resources.trust_store import APPROVAL_POWERS, TrustStore, TrustStoreError


def operator_key(path: Path, trust: TrustStore) -> Ed25519PrivateKey:
    """The operator's signing key (made owner-only on first use), its public half recorded in `trust`."""
    key = held_signing_key(path)
    trust.set_operator_key(key.public_key())
    return key


def approver_public_key(text_or_file: str) -> Ed25519PublicKey:
    """A reviewer's Ed25519 public key given as base64 (what `--public-key` prints) or a file holding
    that or a PEM public key."""
    path = Path(text_or_file)
    text = path.read_text().strip() if path.is_file() else text_or_file.strip()
    try:
        if text.startswith("-----BEGIN PUBLIC KEY-----"):
            key = load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as error:
        raise SystemExit(
            f"{text_or_file!r} is not an Ed25519 public key: give the base64 key the reviewer's "
            "`python -m pipelines.approve_code --public-key` (or approve_retraining) printed, or its file."
        ) from error
    if not isinstance(key, Ed25519PublicKey):
        raise SystemExit(f"{text_or_file!r} is not an Ed25519 public key; approvers sign with Ed25519.")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.operator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("trust-release-key", help="trust the release process's public key")
    approver = commands.add_parser("trust-approver", help="list a reviewer's public key as an approver")
    approver.add_argument("power", choices=APPROVAL_POWERS)
    approver.add_argument("public_key", help="base64 Ed25519 public key, or a file holding it (or its PEM)")
    commands.add_parser("alarms", help="list the open alarms")
    ack = commands.add_parser("acknowledge", help="clear an alarm with the operator's signature")
    ack.add_argument("alarm_id")
    ack.add_argument("--note", required=True, help="what was found and done")
    args = parser.parse_args(argv)

    trust = TrustStore.from_environment()
    key_file = Path(os.environ.get("PIPELINE_OPERATOR_KEY") or REPO_ROOT / ".operator" / "operator.key")
    key = operator_key(key_file, trust)
    if args.command == "trust-release-key":
        signer = resources_for("ecommerce", RuntimeHome.from_environment(), trust)["signer"]
        trust.trust_release_key(signer.public_key_pem(), operator=getpass.getuser())
        print(f"trusted release key {signer.fingerprint()} in {trust.root}")
    elif args.command == "trust-approver":
        public_key = approver_public_key(args.public_key)
        try:
            trust.trust_approver_key(args.power, public_key, getpass.getuser(), key)
        except TrustStoreError as error:
            print(error, file=sys.stderr)
            return 2
        print(f"trusted {public_key_b64(public_key)} as a {args.power} approver in {trust.root}")
    elif args.command == "alarms":
        alarms = trust.open_alarms()
        for alarm in alarms:
            print(f"{alarm.alarm_id}  {alarm.raised_at}  {alarm.reason}")
        print(f"{len(alarms)} open alarm(s)")
    else:
        known = {alarm.alarm_id for alarm in trust.open_alarms()}
        if args.alarm_id not in known:
            print(f"No open alarm {args.alarm_id}: `make alarms` lists them.", file=sys.stderr)
            return 2
        trust.acknowledge(args.alarm_id, getpass.getuser(), key, args.note)
        print(f"acknowledged {args.alarm_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
