"""Who may call a model server, what they may call, how often, and an audit line for every call.

Every request except ``GET /healthz`` carries ``Authorization: Bearer <credential>``, one of:

- an **API key** (``sap_…``, 256 random bits). The server keeps only its SHA-256 in the clients
  file (``SERVING_CLIENTS_FILE``), so a copy of that file lets nobody call the server. Create one
  with ``python -m serving.access add-client ID --scope recommend`` (it prints the key once)::

      {"clients": {"shop-frontend": {"key_sha256": "…", "scopes": ["recommend"], "rate_per_minute": 120}}}

- a **JWT** from a trusted issuer (``SERVING_JWT_ISSUERS``, with ``SERVING_JWT_AUDIENCE``),
  signed with an asymmetric key (EdDSA, ES256/384/512, RS256/PS256 with RSA ≥ 2048 bits): the
  client id is its ``sub``, its scopes the space-separated ``scope`` claim, and ``exp``, ``aud``,
  ``iss`` and ``sub`` are required::

      {"issuers": [{"issuer": "https://login.example.org/", "public_keys": ["-----BEGIN PUBLIC KEY-----…"],
                    "rate_per_minute": 120}]}

What each control protects against:

- authentication (401, ``WWW-Authenticate: Bearer``): anonymous use of a model — scraping it
  to copy or invert it, probing it for adversarial inputs, sending clinical images to it;
- algorithms fixed by the key's type (never ``none``, never HMAC with a public key), ``exp``,
  ``aud`` and ``iss`` checked: forged tokens, algorithm confusion, replay of expired tokens and
  of tokens issued for another service;
- scopes per route (403): a client of one endpoint using another (``recommend`` for
  ``/recommend``, ``diagnose`` for ``/diagnose``, ``admin`` for ``/metrics``); a route with no
  declared scope needs ``admin``, so a new route is closed until someone opens it;
- a rate limit per client (429 with ``Retry-After``): one client exhausting the worker, and the
  high-volume querying that model extraction and membership inference need;
- an audit line per request (logger ``serving.audit``, one JSON object): who called which route
  of which model version, with what outcome and latency. It holds the route template, never the
  path, query, body or answer, so no patient data and no user id reaches the log. `serve`
  (`serving.settings`) sends these lines to stderr; under another launcher, configure the logger.

The rate limiter lives in the server process: with several processes or hosts behind a load
balancer, each enforces its own share (divide the rate) or the limit moves to the gateway.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.routing import Match

from resources.atomic import atomic_write_bytes
from serving.body_limit import ASGIApp, Message, Receive, Scope, Send, send_error

AUDIT = logging.getLogger("serving.audit")

API_KEY_PREFIX = "sap_"
DEFAULT_RATE_PER_MINUTE = 120
ADMIN_SCOPE = "admin"
PUBLIC_ROUTES = frozenset({"/healthz"})  # GET only: orchestrator probes carry no credential
TOKEN_LEEWAY_SECONDS = 30  # clock difference tolerated between issuer and server
REQUIRED_CLAIMS = ["exp", "aud", "iss", "sub"]
_CURVE_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_MIN_RSA_BITS = 2048
REALM = b'Bearer realm="model-server"'


class AccessDenied(Exception):
    """401: the credential is missing or not valid. The message says which, never the credential."""

    def __init__(self, reason: str, *, missing: bool = False):
        super().__init__(reason)
        self.missing = missing

    @property
    def challenge(self) -> bytes:
        """The RFC 6750 ``WWW-Authenticate`` value: no error code when nothing was presented."""
        return REALM if self.missing else REALM + b', error="invalid_token"'


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its id, its scopes, its rate, and how it proved who it is."""

    client_id: str
    scopes: frozenset[str]
    rate_per_minute: int
    method: str


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 suffices (no slow hash needed): the key is 256 random bits, not a guessable password."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyClient:
    client_id: str
    key_sha256: str
    scopes: frozenset[str]
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE

    def __post_init__(self) -> None:
        _check_rate(self.rate_per_minute, self.client_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "key_sha256": self.key_sha256,
            "scopes": sorted(self.scopes),
            "rate_per_minute": self.rate_per_minute,
        }


class ApiKeys:
    """API-key clients, known by the SHA-256 of their keys only."""

    def __init__(self, clients: Iterable[ApiKeyClient]):
        self.clients = {client.client_id: client for client in clients}

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        """Read a clients file, refusing one that others may write (they could add their own key)."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
            entries = json.loads(path.read_text())["clients"]
            clients = [
                ApiKeyClient(
                    client_id,
                    str(entry["key_sha256"]),
                    frozenset(entry["scopes"]),
                    int(entry.get("rate_per_minute", DEFAULT_RATE_PER_MINUTE)),
                )
                for client_id, entry in entries.items()
            ]
        except FileNotFoundError:
            raise FileNotFoundError(
                f"The clients file {path} does not exist: create it with "
                f"`python -m serving.access add-client CLIENT_ID --scope SCOPE --clients-file {path}`."
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"The clients file {path} is not valid ({exc!r}): it must be "
                '{"clients": {ID: {"key_sha256": HEX, "scopes": [...], "rate_per_minute": N}}}.'
            ) from exc
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(
                f"The clients file {path} is writable by other users: run `chmod go-w {path}`."
            )
        return cls(clients)

    def authenticate(self, key: str) -> Principal:
        presented = hash_api_key(key)
        found = None
        for client in self.clients.values():  # every entry compared in constant time, no early exit
            if hmac.compare_digest(client.key_sha256, presented):
                found = client
        if found is None:
            raise AccessDenied("unknown API key")
        return Principal(found.client_id, found.scopes, found.rate_per_minute, "api-key")

    def save(self, path: Path) -> None:
        document = {"clients": {cid: client.as_json() for cid, client in sorted(self.clients.items())}}
        atomic_write_bytes(Path(path), json.dumps(document, indent=2).encode() + b"\n", mode=0o600)


def add_client(
    path: Path, client_id: str, scopes: Sequence[str], rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
) -> str:
    """Add (or re-key) `client_id` in the clients file at `path`; returns the new key, kept nowhere else."""
    if not client_id or not scopes:
        raise ValueError("a client needs an id and at least one scope")
    known = ApiKeys.load(path).clients if Path(path).exists() else {}
    key = new_api_key()
    client = ApiKeyClient(client_id, hash_api_key(key), frozenset(scopes), rate_per_minute)
    ApiKeys([*known.values(), client]).save(path)
    return key


def _check_rate(rate_per_minute: int, owner: str) -> None:
    if rate_per_minute < 1:
        raise ValueError(f"rate_per_minute of {owner} must be at least 1, not {rate_per_minute}")


PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _algorithms_for(key: object) -> frozenset[str]:
    """The signature algorithms a key may verify: decided by the key, never by the token's header."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"})
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_ALGORITHMS:
        return frozenset({_CURVE_ALGORITHMS[key.curve.name]})
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
        return frozenset({"RS256", "PS256"})
    raise ValueError(
        f"{type(key).__name__} keys are not accepted for tokens: "
        f"use Ed25519, EC P-256/384/521 or RSA of {_MIN_RSA_BITS} bits or more"
    )


@dataclass(frozen=True)
class Issuer:
    """A token issuer this server trusts: its `iss` value and its public keys."""

    name: str
    keys: tuple[PublicKey, ...]
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
    algorithms: tuple[frozenset[str], ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.name or not self.keys:
            raise ValueError("an issuer needs its `issuer` name and at least one public key")
        _check_rate(self.rate_per_minute, self.name)
        object.__setattr__(self, "algorithms", tuple(_algorithms_for(key) for key in self.keys))


class TokenVerifier:
    """Verifies bearer JWTs against the configured issuers' public keys, for one audience."""

    def __init__(self, issuers: Iterable[Issuer], audience: str, leeway: float = TOKEN_LEEWAY_SECONDS):
        if not audience:
            raise ValueError("tokens need an audience: set SERVING_JWT_AUDIENCE to this server's name")
        self.issuers = {issuer.name: issuer for issuer in issuers}
        self.audience, self.leeway = audience, leeway

    @classmethod
    def load(cls, path: Path, audience: str) -> TokenVerifier:
        try:
            issuers = [
                Issuer(
                    str(entry["issuer"]),
                    tuple(load_pem_public_key(pem.encode()) for pem in entry["public_keys"]),
                    int(entry.get("rate_per_minute", DEFAULT_RATE_PER_MINUTE)),
                )
                for entry in json.loads(Path(path).read_text())["issuers"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"The token issuers file {path} is not valid ({exc}): it must be "
                '{"issuers": [{"issuer": ISS, "public_keys": [PEM, ...], "rate_per_minute": N}]}.'
            ) from exc
        return cls(issuers, audience)

    def authenticate(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            claimed = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            raise AccessDenied("malformed token") from None
        issuer = self.issuers.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise AccessDenied("token from an issuer this server does not trust")
        keys = [
            key for key, allowed in zip(issuer.keys, issuer.algorithms, strict=True) if algorithm in allowed
        ]
        if not keys:
            raise AccessDenied(f"token algorithm {algorithm!r} is not accepted for this issuer's keys")
        claims = self._verified(token, keys, algorithm, issuer.name)
        subject, scope = claims["sub"], claims.get("scope", "")
        if not isinstance(subject, str) or not subject or not isinstance(scope, str):
            raise AccessDenied(
                "token's sub must be a non-empty string and its scope a space-separated string"
            )
        return Principal(subject, frozenset(scope.split()), issuer.rate_per_minute, "jwt")

    def _verified(self, token: str, keys: list[PublicKey], algorithm: str, issuer: str) -> dict[str, Any]:
        for key in keys:  # an issuer may hold several keys while it rotates them
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    issuer=issuer,
                    leeway=self.leeway,
                    options={"require": REQUIRED_CLAIMS},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise AccessDenied("token expired") from None
            except jwt.InvalidAudienceError:
                raise AccessDenied(f"token is not for this server (audience {self.audience!r})") from None
            except jwt.InvalidTokenError as exc:
                raise AccessDenied(f"invalid token: {exc}") from None
        raise AccessDenied("token signature does not verify")


@dataclass(frozen=True)
class AccessPolicy:
    """How callers prove who they are: API keys, tokens, or both (at least one)."""

    api_keys: ApiKeys | None = None
    tokens: TokenVerifier | None = None

    def __post_init__(self) -> None:
        if self.api_keys is None and self.tokens is None:
            raise ValueError("an access policy needs API keys, token issuers or both")

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AccessDenied("no credential: send Authorization: Bearer <token or API key>", missing=True)
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AccessDenied("expected Authorization: Bearer <token or API key>")
        if credential.startswith(API_KEY_PREFIX):
            if self.api_keys is None:
                raise AccessDenied("this server accepts tokens, not API keys")
            return self.api_keys.authenticate(credential)
        if self.tokens is None:
            raise AccessDenied("this server accepts API keys, not tokens")
        return self.tokens.authenticate(credential)


class RateLimiter:
    """A token bucket per client: `rate_per_minute` requests refilled evenly, bursts up to the same."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens left, when)
        self._lock = threading.Lock()

    def take(self, client: str, rate_per_minute: int) -> float:
        """0 when the request may go ahead; otherwise the seconds until it may."""
        per_second = rate_per_minute / 60
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(client, (float(rate_per_minute), now))
            tokens = min(float(rate_per_minute), tokens + (now - then) * per_second)
            allowed = tokens >= 1
            self._buckets[client] = (tokens - 1 if allowed else tokens, now)
        return 0.0 if allowed else (1 - tokens) / per_second


def route_template(scope: Scope) -> str:
    """The route template a request matches (bounded cardinality, no ids or values), or "unmatched"."""
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", "other")
    return "unmatched"


class AccessControl:
    """ASGI middleware: authenticate, rate-limit and authorise each HTTP request, then audit it.

    It answers 401/429/403 from the headers alone, before any layer inside reads the body.
    `route_scopes` maps route templates to the scope they need; other routes need ``admin``.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: AccessPolicy,
        route_scopes: Mapping[str, str],
        model_version: Callable[[], int | None],
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app, self.policy, self.route_scopes = app, policy, route_scopes
        self.model_version = model_version
        self.limiter = limiter or RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_template(scope)
        record: dict[str, Any] = {"client": None, "auth": None, "method": scope["method"], "endpoint": route}
        status = 500

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, route, record)
            if refusal is None:
                await self.app(scope, receive, recorded)
            else:
                await send_error(recorded, *refusal)
        finally:
            record.update(
                time=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                model_version=self.model_version(),
                peer=(scope.get("client") or [None])[0],
            )
            AUDIT.info(json.dumps(record, sort_keys=True))

    def _refusal(self, scope: Scope, route: str, record: dict[str, Any]) -> tuple[int, str, list] | None:
        if route in PUBLIC_ROUTES and scope["method"] == "GET":
            return None
        try:
            principal = self.policy.authenticate(_header(scope, b"authorization"))
        except AccessDenied as exc:
            record["reason"] = str(exc)
            return 401, str(exc), [(b"www-authenticate", exc.challenge)]
        record.update(client=principal.client_id, auth=principal.method)
        wait = self.limiter.take(f"{principal.method}:{principal.client_id}", principal.rate_per_minute)
        if wait:
            seconds = math.ceil(wait)
            record["reason"] = "rate limit"
            return (
                429,
                f"over the rate limit of {principal.rate_per_minute} requests a minute: retry in {seconds} s",
                [(b"retry-after", str(seconds).encode())],
            )
        needed = None if route == "unmatched" else self.route_scopes.get(route, ADMIN_SCOPE)
        if needed is not None and needed not in principal.scopes:
            record["reason"] = f"scope {needed} missing"
            challenge = REALM + f', error="insufficient_scope", scope="{needed}"'.encode()
            return (
                403,
                f"client {principal.client_id!r} lacks the {needed!r} scope",
                [(b"www-authenticate", challenge)],
            )
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.access", description="Manage API-key clients.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-client", help="add a client (or give it a new key); prints the key once")
    add.add_argument("client_id")
    add.add_argument(
        "--scope", action="append", required=True, help="recommend, diagnose, admin (repeatable)"
    )
    add.add_argument("--rate-per-minute", type=int, default=DEFAULT_RATE_PER_MINUTE)
    add.add_argument("--clients-file", type=Path, default=os.environ.get("SERVING_CLIENTS_FILE"))
    args = parser.parse_args(argv)
    if args.clients_file is None:
        parser.error("give --clients-file or set SERVING_CLIENTS_FILE")
    key = add_client(args.clients_file, args.client_id, args.scope, args.rate_per_minute)
    print(f"API key for {args.client_id} (shown once; the server keeps only its hash):\n{key}")


if __name__ == "__main__":
    main()
