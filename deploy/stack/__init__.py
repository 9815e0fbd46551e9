"""`make stack`: the production services on loopback, started and stopped as one unit.

The stack runs what a production deployment runs, on 127.0.0.1, with every
file it keeps (data, logs, process ids, generated credentials) under
`$PIPELINE_HOME/stack/`:

- PostgreSQL: the Dagster instance, the provenance ledger and MLflow's backend
  store, one database and one role each; TLS only, with a certificate from the
  stack's CA (`stack/ca/`), which every client verifies;
- an S3 + KMS endpoint (moto), HTTPS only: the artifact store, the DVC
  remote, MLflow's artifacts and Dagster's compute logs, encrypted
  server-side under a KMS key;
- an MLflow server, HTTPS only: runs and the model registry in Postgres,
  artifacts proxied to the bucket;
- a Spark standalone master and worker: authentication, RPC and I/O
  encryption on;
- one `dagster code-server` per location, `dagster-daemon` and
  `dagster-webserver`, over the instance in `deploy/dagster.yaml` and the
  workspace in `deploy/workspace.yaml`, plus a `--read-only` webserver for
  viewers;
- nginx in front of both webservers: TLS and a password per person
  (`deploy/stack/proxy.py`), the only way people reach the UI.

`python -m deploy.stack up|down|status|env`; `env` prints the settings a
shell needs to submit runs to the stack (`make demo-stack`).
"""
