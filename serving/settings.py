"""The model servers' network and access settings, read from the environment in one place.

| variable | meaning |
|---|---|
| ``SERVING_HOST`` | address to listen on (default ``127.0.0.1``) |
| ``SERVING_PORT`` | port (default: the example's, 8000 recommender, 8001 diagnostic) |
| ``SERVING_CLIENTS_FILE`` | API-key clients: key hashes, scopes, rates (``serving.access add-client``) |
| ``SERVING_JWT_ISSUERS`` | trusted token issuers and their public keys (JSON; see ``serving.access``) |
| ``SERVING_JWT_AUDIENCE`` | the ``aud`` this server's tokens must carry (required with issuers) |
| ``SERVING_TLS_CERT`` / ``SERVING_TLS_KEY`` | the server's certificate chain and key (PEM): HTTPS only |
| ``SERVING_TLS_CLIENT_CA`` | CA certificates; when set, clients must show a certificate one issued |

`serve` is the checked way to start a server (``make serve``, ``python -m serving.ecommerce``,
``python -m serving.healthcare``, ``python -m serving.app``): it refuses to listen on anything
but loopback unless TLS and authentication are both configured, and names what is missing.
This protects against a server reachable from the network that takes requests in clear text
(credentials and clinical images readable and alterable on the wire) or that any demo key opens.
Mutual TLS adds a second factor bound to the connection: a stolen API key or token is useless
without a certificate from the configured CA. (``uvicorn --factory …`` cannot be checked this way:
uvicorn never tells the app where it listens; use it on loopback only, e.g. in tests.)

With no authentication configured, a server on loopback uses the clients file under
``$PIPELINE_HOME/serving/``; `serve` creates it there on first run with one ``demo`` client
whose key it keeps owner-only beside it, and prints how to call the server with it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resources.atomic import atomic_write_bytes
from resources.runtime import RuntimeHome
from serving.access import AUDIT, AccessPolicy, ApiKeys, TokenVerifier, add_client

LOOPBACK = "127.0.0.1"
DEMO_CLIENT = "demo"
DEMO_SCOPES = ("recommend", "diagnose", "admin")


class InsecureSettings(ValueError):
    """The settings would expose the server or contradict each other; the message says what to set."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None


@dataclass(frozen=True)
class ServingSettings:
    host: str = LOOPBACK
    port: int = 8000
    clients_file: Path | None = None
    jwt_issuers: Path | None = None
    jwt_audience: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @classmethod
    def from_environment(
        cls, default_port: int = 8000, environ: Mapping[str, str] | None = None
    ) -> ServingSettings:
        env = os.environ if environ is None else environ
        return cls(
            host=env.get("SERVING_HOST") or LOOPBACK,
            port=int(env.get("SERVING_PORT") or default_port),
            clients_file=_path(env, "SERVING_CLIENTS_FILE"),
            jwt_issuers=_path(env, "SERVING_JWT_ISSUERS"),
            jwt_audience=env.get("SERVING_JWT_AUDIENCE") or None,
            tls_cert=_path(env, "SERVING_TLS_CERT"),
            tls_key=_path(env, "SERVING_TLS_KEY"),
            tls_client_ca=_path(env, "SERVING_TLS_CLIENT_CA"),
        )

    @property
    def authentication_configured(self) -> bool:
        return self.clients_file is not None or self.jwt_issuers is not None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    def check(self) -> None:
        """Raise `InsecureSettings` naming every missing or contradictory setting."""
        problems = []
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("set both SERVING_TLS_CERT and SERVING_TLS_KEY, not one of them")
        if self.tls_client_ca is not None and not self.tls:
            problems.append("SERVING_TLS_CLIENT_CA (mutual TLS) needs SERVING_TLS_CERT and SERVING_TLS_KEY")
        if self.jwt_issuers is not None and not self.jwt_audience:
            problems.append(
                "SERVING_JWT_ISSUERS needs SERVING_JWT_AUDIENCE (the aud this server's tokens carry)"
            )
        if not is_loopback(self.host):
            missing = []
            if not self.tls:
                missing.append("TLS (SERVING_TLS_CERT and SERVING_TLS_KEY)")
            if not self.authentication_configured:
                missing.append("authentication (SERVING_CLIENTS_FILE or SERVING_JWT_ISSUERS)")
            if missing:
                problems.append(
                    f"refusing to listen on {self.host} without {' and '.join(missing)}: set them, "
                    f"or listen on {LOOPBACK}"
                )
        if problems:
            raise InsecureSettings("; ".join(problems))

    def access_policy(self, home: RuntimeHome) -> AccessPolicy:
        """The configured clients and issuers; with neither, the demo clients file under `home`."""
        clients = self.clients_file
        if not self.authentication_configured:
            clients = demo_clients_file(home)
            if not clients.exists():
                raise FileNotFoundError(
                    "No client could authenticate: set SERVING_CLIENTS_FILE (API keys: `python -m "
                    "serving.access add-client`) or SERVING_JWT_ISSUERS with SERVING_JWT_AUDIENCE; "
                    "for a local demo, `make serve` creates a demo key."
                )
        return AccessPolicy(
            api_keys=ApiKeys.load(clients) if clients is not None else None,
            tokens=TokenVerifier.load(self.jwt_issuers, self.jwt_audience or "")
            if self.jwt_issuers is not None
            else None,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"host": self.host, "port": self.port, "server_header": False}
        options["access_log"] = False  # uvicorn's would log query strings; the audit line replaces it
        if self.tls:
            options.update(ssl_certfile=str(self.tls_cert), ssl_keyfile=str(self.tls_key))
        if self.tls_client_ca is not None:
            options.update(ssl_ca_certs=str(self.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def demo_clients_file(home: RuntimeHome) -> Path:
    return home.path("serving") / "clients.json"


def demo_api_key(home: RuntimeHome) -> Path:
    """The file holding the demo client's key (owner-only), created with its client on first use."""
    key_file = home.path("serving") / "demo-api-key"
    clients = demo_clients_file(home)
    if not key_file.exists() or DEMO_CLIENT not in (
        ApiKeys.load(clients).clients if clients.exists() else {}
    ):
        key = add_client(clients, DEMO_CLIENT, DEMO_SCOPES)
        atomic_write_bytes(key_file, key.encode(), mode=0o600)
    return key_file


def serve(
    create: Callable[[AccessPolicy], Any], settings: ServingSettings, home: RuntimeHome, try_it: str
) -> None:
    """Check `settings`, build the app with `create(policy)` and run it under uvicorn.

    `try_it` is the tail of a curl command line (``{base}`` is replaced by the server's URL) that
    is printed, with the demo key, when the demo client is used.
    """
    import uvicorn

    settings.check()
    if not AUDIT.handlers:  # one JSON line per request on stderr, for the service manager to collect
        AUDIT.addHandler(logging.StreamHandler())
        AUDIT.setLevel(logging.INFO)
    if not settings.authentication_configured:
        key_file = demo_api_key(home)
        request = try_it.replace("{base}", settings.base_url)
        print(
            f"No SERVING_CLIENTS_FILE or SERVING_JWT_ISSUERS set: the demo client's key is in {key_file}.\n"
            f'Try:  curl -H "Authorization: Bearer $(cat {key_file})" {request}',
            flush=True,
        )
    uvicorn.run(create(settings.access_policy(home)), **settings.uvicorn_options())


def serve_example(create: Callable[..., Any], default_port: int, try_it: str) -> None:
    """`serve` an example's factory, called as ``create(home, access=policy)``, as the environment says."""
    home = RuntimeHome.from_environment()
    settings = ServingSettings.from_environment(default_port)
    serve(lambda access: create(home, access=access), settings, home, try_it)
