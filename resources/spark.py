"""A hardened Spark session for the processing stage.

Locally the session runs in-process (`local[*]`); in production `master` points
at a cluster and the same code runs there. The defaults below are the
"hardened Spark configuration" control of the processing stage: every entry
says what it protects against, and `effective_conf()` exposes the result so a
check or test can assert it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import dagster as dg
from pydantic import Field
from pyspark.sql import SparkSession

from resources.endpoints import require_reachable

logger = logging.getLogger(__name__)

# `local`, `local[4]`, `local[*]`, `local[4,2]`: one JVM on this machine, no network peers.
_LOCAL_MASTER = re.compile(r"local(\[[^\]]*\])?")

# Settings whose name or value matches this are shown as "*********(redacted)" wherever Spark
# lists its configuration (logs, environment page, event logs). Over-matching only hides a value.
_REDACTION_REGEX = r"(?i)secret|password|passwd|token|credential|private|key"
_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")

# Serialises the check-then-create in `session()` across threads of one process.
_SESSION_LOCK = threading.Lock()


class SparkResource(dg.ConfigurableResource):
    """One shared, hardened Spark session per process.

    `session()` creates the session on first use and returns the same one
    afterwards: starting Spark takes ~10 s, and a second session in one process
    would only ever reuse the first one's core settings anyway.
    """

    master: str = Field(
        default="local[*]",
        description="Spark master URL: `local[*]` on a laptop, a cluster URL in production.",
    )
    app_name: str = Field(default="secure-ai-pipeline", description="Spark application name.")
    local_dir: str = Field(
        description="Owner-only folder for the driver's scratch files and warehouse (not a shared /tmp)."
    )
    conf: dict[str, str] = Field(
        default={},
        description="Extra Spark settings; they override the hardened defaults.",
    )
    auth_secret_env: str = Field(
        default="SPARK_AUTH_SECRET",
        description=(
            "Environment variable holding the shared secret for `spark.authenticate` "
            "(required when `master` is not local)."
        ),
    )

    def _folder(self, name: str) -> Path:
        folder = Path(self.local_dir) / name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder

    @property
    def is_local(self) -> bool:
        """Whether the driver and executors share this one JVM."""
        return _LOCAL_MASTER.fullmatch(self.master) is not None

    def effective_conf(self) -> dict[str, str]:
        """The settings `session()` applies: hardened defaults, then `conf` on top.

        The cluster authentication secret is checked for but never included, so
        the result can be logged or attached to metadata.
        """
        settings = {
            # The UI is an unauthenticated HTTP server that shows data samples and settings.
            "spark.ui.enabled": "false",
            # Even where the UI is turned back on, nobody may kill jobs from it.
            "spark.ui.killEnabled": "false",
            # Progress bars on the console garble run logs.
            "spark.ui.showConsoleProgress": "false",
            # Event logs copy query plans and settings to disk outside the artifact store.
            "spark.eventLog.enabled": "false",
            # Shuffle and spill files hold raw rows on local disk: encrypt them (AES-CTR).
            "spark.io.encryption.enabled": "true",
            # Overflow, bad casts and invalid dates raise instead of silently becoming null.
            "spark.sql.ansi.enabled": "true",
            # Timestamps mean the same instant whatever the machine's time zone.
            "spark.sql.session.timeZone": "UTC",
            # The default of 200 shuffle partitions wastes time on tiny local tasks.
            "spark.sql.shuffle.partitions": "8",
            # Secrets, keys and tokens in settings never reach logs or the environment page.
            "spark.redaction.regex": _REDACTION_REGEX,
            # Driver, executors and shuffle service prove they share a secret (a local session
            # makes its own; a cluster's comes from `auth_secret_env`).
            "spark.authenticate": "true",
            # RPC and block transfers are encrypted (without it, I/O encryption's keys cross the
            # wire in the clear) ...
            "spark.network.crypto.enabled": "true",
            # ... with an authenticated cipher: AES-CTR (the default) lets a
            # man-in-the-middle flip bits undetected.
            "spark.network.crypto.cipher": "AES/GCM/NoPadding",
            # Never fall back to unencrypted SASL with peers that lack AES support.
            "spark.network.crypto.saslFallback": "false",
            # The JVM's notices and warnings go to <local_dir>/logs/spark.log, not the console.
            "spark.driver.extraJavaOptions": (
                f'"-Dlog4j2.configurationFile={_LOG_CONFIG.as_uri()}" '
                f'"-Dpipeline.spark.log={self._folder("logs") / "spark.log"}"'
            ),
        }
        if self.is_local:
            settings |= {
                # Listen on loopback only: nothing else on the network can reach the driver.
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.host": "127.0.0.1",
                # Scratch files stay in the owner-only runtime folder, not a shared /tmp.
                "spark.local.dir": str(self._folder("scratch")),
                # Managed tables (if any) land in the runtime folder, not the working directory.
                "spark.sql.warehouse.dir": str(self._folder("warehouse")),
            }
        else:
            self._auth_secret()  # fail before anything starts when the secret is missing
        return settings | dict(self.conf)

    def _auth_secret(self) -> str:
        secret = os.environ.get(self.auth_secret_env, "")
        if not secret:
            raise RuntimeError(
                f"Spark master {self.master!r} is not local, so spark.authenticate is on and "
                f"needs a shared secret: set the environment variable {self.auth_secret_env} "
                "(or point `auth_secret_env` at the variable that holds it)."
            )
        return secret

    def session(self) -> SparkSession:
        """The process's Spark session, created with `effective_conf()` on first use."""
        with _SESSION_LOCK:
            spark = SparkSession.getActiveSession()
            if spark is None:
                builder = SparkSession.builder.master(self.master).appName(self.app_name)
                for key, value in self.effective_conf().items():
                    builder = builder.config(key, value)
                if not self.is_local:
                    for master in self.master.removeprefix("spark://").split(","):  # standby masters
                        require_reachable(f"spark://{master}", "PIPELINE_SPARK_MASTER")
                    builder = builder.config("spark.authenticate.secret", self._auth_secret())
                spark = builder.getOrCreate()
                # INFO logging floods the run log and can echo data values.
                spark.sparkContext.setLogLevel("WARN")
            elif spark.sparkContext.master != self.master:
                logger.warning(
                    "Reusing this process's Spark session on %s; the requested master %s "
                    "is ignored (one session per process).",
                    spark.sparkContext.master,
                    self.master,
                )
            return spark
