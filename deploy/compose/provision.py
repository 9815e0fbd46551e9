"""`python -m deploy.compose.provision postgres|s3`: what `make stack` does once Postgres and the S3/KMS
endpoint are up, for the one-shot services of `deploy/compose.yaml`.

`deploy.stack.postgres.provision` and `deploy.stack.objectstore.provision` do the same for the stack,
where every service listens on loopback and the credentials sit in `stack/credentials.json`. Here the
services are reached by name and every credential comes from the environment, which
`python -m deploy.compose.credentials` writes. Both steps are safe to run again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import boto3

from deploy.stack.objectstore import provision_buckets
from deploy.stack.postgres import LOGIN_ROLES, client_tls, provision_databases


def role_password_variable(role: str) -> str:
    """The variable holding `role`'s password for the Postgres step (`roles.env`)."""
    return f"PIPELINE_PG_{role.upper()}_PASSWORD"


def postgres(environ: Mapping[str, str] = os.environ) -> None:
    """The stack's roles, databases and grants, on the server and with the passwords compose names,
    over TLS verified against the CA at `PGSSLROOTCERT`."""
    provision_databases(
        environ["PIPELINE_PG_HOST"],
        environ["PIPELINE_PG_PORT"],
        Path(environ["PIPELINE_PG_ADMIN_PASSWORD_FILE"]).read_text().strip(),
        {role: environ[role_password_variable(role)] for role in LOGIN_ROLES},
        client_tls(Path(environ["PGSSLROOTCERT"])),
    )


def s3() -> None:
    """The stack's KMS key and buckets; endpoint, region and credentials are the standard AWS
    variables, read by boto3 itself."""
    provision_buckets(boto3.client("kms"), boto3.client("s3"))


STEPS = {"postgres": postgres, "s3": s3}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in STEPS:
        print(f"usage: python -m deploy.compose.provision {'|'.join(STEPS)}", file=sys.stderr)
        return 2
    STEPS[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
