"""The operator's commands on the trust store: what only a person with the operator key may do.

    python -m pipelines.operator trust-release-key        list the release process's public key as trusted
    python -m pipelines.operator alarms                   the open alarms
    python -m pipelines.operator acknowledge ID --note …  clear one alarm, signed with the operator key

The pipeline never runs these: promotion adds no trusted key, and a failed
audit or a refused release stays failed until an operator acknowledges it.
The operator's private key lives outside the pipeline's home and the trust
store (`$PIPELINE_OPERATOR_KEY`, default `.operator/operator.key`); the trust
store holds its public half, recorded when the key is first made.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from pipelines.environment import resources_for
from resources.atomic import atomic_write_bytes
from resources.runtime import REPO_ROOT, RuntimeHome
from resources.trust_store import TrustStore


def operator_key(path: Path, trust: TrustStore) -> Ed25519PrivateKey:
    """The operator's signing key (made owner-only on first use), its public half recorded in `trust`."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} is readable by others: chmod 600 {path}")
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        atomic_write_bytes(path, pem, mode=0o600)
    trust.set_operator_key(key.public_key())
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.operator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("trust-release-key", help="trust the release process's public key")
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
