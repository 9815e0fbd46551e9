"""The S3 + KMS endpoint (moto server): buckets encrypted server-side by default under one KMS key.

moto keeps its state in memory: when it stops, the buckets and the KMS key are
gone, so `make stack-down` forgets the whole stack's state with them. The
store encrypts every object itself before upload (`resources.segmented_aead`), so
the server-side encryption is a second layer, as in production with SSE-KMS.

It serves HTTPS only, with the certificate the stack's CA issued for its HTTPS
endpoints: a plain HTTP request breaks the TLS handshake. Every client
verifies it against the CA (`AWS_CA_BUNDLE`, which boto3, s3fs and DVC read).
"""

from __future__ import annotations

import ssl
import sys

import boto3
import httpx

from deploy.stack.processes import Service
from deploy.stack.settings import BUCKETS, HOST, REGION, Stack
from resources.atomic import atomic_file

KEY_ALIAS = "alias/pipeline-stack"


def client(stack: Stack, name: str):
    env = stack.aws_environment()
    return boto3.client(
        name,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        verify=env["AWS_CA_BUNDLE"],
    )


def provision(stack: Stack) -> None:
    """The stack's key and buckets; the key also wraps the pipeline's own keys (`PIPELINE_KMS_KEY_URI`)."""
    arn = provision_buckets(client(stack, "kms"), client(stack, "s3"))
    with atomic_file(stack.kms_key_file) as handle:
        handle.write(f"aws-kms://{arn}".encode())


def provision_buckets(kms, s3) -> str:
    """The KMS key under `KEY_ALIAS` (made on first use) and one bucket per use of `BUCKETS`, each
    encrypted by default with that key and closed to public access; returns the key's ARN. Safe to
    run again, on any endpoint (the stack's, compose's)."""
    if KEY_ALIAS not in {alias["AliasName"] for alias in kms.list_aliases()["Aliases"]}:
        key = kms.create_key(Description="Secure AI pipeline stack", KeyUsage="ENCRYPT_DECRYPT")
        kms.create_alias(AliasName=KEY_ALIAS, TargetKeyId=key["KeyMetadata"]["KeyId"])
    arn = kms.describe_key(KeyId=KEY_ALIAS)["KeyMetadata"]["Arn"]
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS.values():
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    return arn


def answers(stack: Stack) -> bool:
    """Whether the endpoint answers over HTTPS with a certificate the stack's CA issued."""
    verify = ssl.create_default_context(cafile=stack.ca_certificate)
    return httpx.get(f"{stack.s3_endpoint()}/moto-api/", verify=verify, timeout=2).status_code == 200


def service(stack: Stack) -> Service:
    port = stack.port("s3")
    tls = stack.https_identity
    return Service(
        name="s3",
        argv=[
            sys.executable,
            "-m",
            "moto.server",
            "-H",
            HOST,
            "-p",
            str(port),
            "--ssl-cert",
            str(tls.certificate),
            "--ssl-key",
            str(tls.key),
        ],  # fmt: skip
        env=stack.environment,
        healthy=lambda: answers(stack),
        port=port,
        hint="moto comes with the dev extra: `make install`.",
        prepare=stack.issue_https_identity,
        after_start=lambda: provision(stack),
    )
