"""The e-commerce recommender on the secure model server.

    make serve                       # or: python -m serving.ecommerce

The server loads the current champion release through the secure loader in
an isolated worker (verified at load, and again whenever the release changes) and answers
`GET /recommend?user_id=...&k=10` from memory, to clients holding the
`recommend` scope (`admin` for `/metrics`). It listens on `SERVING_HOST`
(default 127.0.0.1) and `SERVING_PORT` (default 8000); TLS, mutual TLS and
who may call it are set by the variables listed in `serving.settings`.
"""

from fastapi import FastAPI
from pydantic import BaseModel, Field

from domain.ecommerce.release import MODEL_NAME
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore
from serving.access import AccessPolicy
from serving.app import add_worker_route, create_release_app
from serving.body_limit import json_body_limit
from serving.settings import ServingSettings, serve_example

MAX_BODY_BYTES = json_body_limit(0)  # /recommend takes a query string; no endpoint needs a large body
SCOPE = "recommend"
PORT = 8000


class RecommendParams(BaseModel):
    user_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    k: int = Field(default=10, ge=1, le=100)


def create_recommender_app(
    home: RuntimeHome | None = None, trust: TrustStore | None = None, access: AccessPolicy | None = None
) -> FastAPI:
    """The recommender server for the current release under `home` (default: `$PIPELINE_HOME`).

    Its callers are those of `access` (default: the clients configured in the environment).
    """
    handler = "serving.recommender_handler:RecommenderHandler"
    home, trust = home or RuntimeHome.from_environment(), trust or TrustStore.from_environment()
    app = create_release_app(
        MODEL_NAME,
        handler,
        title="E-commerce recommender",
        home=home,
        trust=trust,
        access=access or ServingSettings.from_environment(PORT).access_policy(home),
        scope=SCOPE,
        max_body_bytes=MAX_BODY_BYTES,
    )
    add_worker_route(app, "/recommend", "recommend", RecommendParams)
    return app


def main() -> None:
    serve_example(create_recommender_app, PORT, try_it='"{base}/recommend?user_id=u0000001&k=5"')


if __name__ == "__main__":
    main()
