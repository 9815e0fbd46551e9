"""Fail fast, with advice, when a configured service cannot be reached.

Spark's standalone client retries an unreachable master for a minute before
giving up with "All masters are unresponsive", and MLflow's HTTP client
retries for minutes with exponential back-off: a wrong host or port in a
setting would surface as a long hang and a stack trace naming neither the
setting nor the fix. One TCP connection with a short timeout answers the
question first.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "spark": 7077}


class EndpointUnavailableError(RuntimeError):
    """A service named by a setting refuses connections or does not answer."""


def require_reachable(url: str, setting: str, timeout: float = 5.0) -> None:
    """Raise `EndpointUnavailableError` naming `setting` unless `url`'s host accepts a TCP connection."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)
    if not host or not port:
        raise EndpointUnavailableError(
            f"{setting}={url!r} names no host and port: give a URL like "
            f"{parts.scheme or 'http'}://host:{DEFAULT_PORTS.get(parts.scheme, 'port')}."
        )
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise EndpointUnavailableError(
            f"Nothing answers at {host}:{port} ({setting}={url}): {error}. Start the service "
            f"(`make stack` runs one on this machine) or correct {setting}; nothing was run."
        ) from error
