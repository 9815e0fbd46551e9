"""The e-commerce recommender on the secure model server.

    uvicorn --factory serving.ecommerce:create_recommender_app --host 127.0.0.1 --port 8000

The server loads the current champion release through the secure loader in
an isolated worker (signature verified once, at load) and answers
`GET /recommend?user_id=...&k=10` from memory.
"""

from fastapi import FastAPI
from pydantic import BaseModel, Field

from domain.ecommerce.release import MODEL_NAME
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore
from serving.app import add_worker_route, create_release_app
from serving.body_limit import json_body_limit

MAX_BODY_BYTES = json_body_limit(0)  # /recommend takes a query string; no endpoint needs a large body


class RecommendParams(BaseModel):
    user_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    k: int = Field(default=10, ge=1, le=100)


def create_recommender_app(home: RuntimeHome | None = None, trust: TrustStore | None = None) -> FastAPI:
    """The recommender server for the current release under `home` (default: `$PIPELINE_HOME`)."""
    handler = "serving.recommender_handler:RecommenderHandler"
    home, trust = home or RuntimeHome.from_environment(), trust or TrustStore.from_environment()
    app = create_release_app(
        MODEL_NAME,
        handler,
        title="E-commerce recommender",
        home=home,
        trust=trust,
        max_body_bytes=MAX_BODY_BYTES,
    )
    add_worker_route(app, "/recommend", "recommend", RecommendParams)
    return app
