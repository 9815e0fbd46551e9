"""Worker-side half of the recommender server: what runs next to the loaded model.

Imported by the isolated worker (`serving.worker`), so it imports the model
contract and nothing of the server or the pipeline.
"""

from domain.ecommerce import recommender
from domain.ecommerce.release import ARCHITECTURES
from resources.loader import LoadedModel
from serving.worker import ModelHandler


class RecommenderHandler(ModelHandler):
    """Worker-side: top-k items for a user from the loaded matrix-factorisation model."""

    architectures = ARCHITECTURES
    methods = ("recommend",)

    def __init__(self) -> None:
        self._indices: dict[str, recommender.IdIndex] = {}  # per loaded model (by weights digest)

    def index(self, model: LoadedModel) -> recommender.IdIndex:
        """`model`'s id index, built (and its ids checked) once per model rather than per request."""
        if model.digest not in self._indices:
            self._indices[model.digest] = recommender.IdIndex.from_dict(model.config["id_index"])
        return self._indices[model.digest]

    def recommend(self, model: LoadedModel, params: dict) -> dict:
        items = recommender.recommend(
            model.module, self.index(model), params["user_id"], int(params.get("k", 10)), exclude=set()
        )
        return {
            "user_id": params["user_id"],
            "model_version": model.version,
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in items],
        }
