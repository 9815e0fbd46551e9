"""The e-commerce recommender on the secure model server.

    uvicorn --factory serving.ecommerce:create_recommender_app --host 127.0.0.1 --port 8000

The server loads the current champion release through the secure loader in
an isolated worker (signature verified once, at load) and answers
`GET /recommend?user_id=...&k=10` from memory.
"""

from fastapi import FastAPI
from pydantic import BaseModel, Field

from assets.ecommerce.deployment import ARCHITECTURES, MODEL_NAME
from domain.ecommerce import recommender
from resources.loader import LoadedModel
from resources.releases import ModelReleases
from serving.app import add_worker_route, create_release_app
from serving.worker import ModelHandler


class RecommendParams(BaseModel):
    user_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    k: int = Field(default=10, ge=1, le=100)


class RecommenderHandler(ModelHandler):
    """Worker-side: top-k items for a user from the loaded matrix-factorisation model."""

    architectures = ARCHITECTURES
    methods = ("recommend",)

    def __init__(self) -> None:
        self._indices: dict[str, recommender.IdIndex] = {}  # per loaded model (by weights digest)

    def recommend(self, model: LoadedModel, params: dict) -> dict:
        index = self._indices.setdefault(
            model.digest, recommender.IdIndex.from_dict(model.config["id_index"])
        )
        items = recommender.recommend(
            model.module, index, params["user_id"], int(params.get("k", 10)), exclude=set()
        )
        return {
            "user_id": params["user_id"],
            "model_version": model.version,
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in items],
        }


def create_recommender_app(releases: ModelReleases | None = None) -> FastAPI:
    """The recommender server for the current champion release."""
    app = create_release_app(
        MODEL_NAME, "serving.ecommerce:RecommenderHandler", title="E-commerce recommender", releases=releases
    )
    add_worker_route(app, "/recommend", "recommend", RecommendParams)
    return app
