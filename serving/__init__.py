"""Model serving: the secure loader, the isolated inference worker and the FastAPI server.

- `resources.loader.SecureModelLoader` verifies a signed model directory and loads
  safetensors weights into an architecture built from code (never unpickles).
- `serving.worker` runs inference in a separate, resource-limited process that
  speaks JSON lines over stdin/stdout; `WorkerClient` drives one, and
  `WorkerPool` several side by side (`SERVING_WORKERS`).
- `serving.app.create_app` is the FastAPI server (`/healthz`, `/predict`,
  `/metrics`) on top of a worker pool; examples add their own routes with
  `serving.app.add_worker_route`.
- `serving.access` authenticates (API keys, JWTs), rate-limits, authorises by
  scope and audits every request; `serving.settings` reads the TLS and access
  settings and refuses to listen beyond loopback without them.
"""
