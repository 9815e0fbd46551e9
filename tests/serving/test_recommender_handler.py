"""The recommender's worker-side handler: answers from the loaded model, its id index built once per model."""

import torch

from domain.ecommerce import recommender
from resources.loader import LoadedModel
from serving.recommender_handler import RecommenderHandler


def _loaded(digest: str) -> LoadedModel:
    model = recommender.MatrixFactorization(n_users=3, n_items=4, dim=2)
    model.reset_parameters(torch.Generator().manual_seed(1))
    index = recommender.IdIndex(users=("u1", "u2", "u3"), items=("i1", "i2", "i3", "i4"))
    config = {"architecture": model.architecture(), "id_index": index.to_dict()}
    return LoadedModel(module=model.eval(), config=config, version=2, signer="s", digest=digest)


def test_the_id_index_is_built_once_per_model_not_per_request(monkeypatch):
    built = []
    from_dict = recommender.IdIndex.from_dict
    monkeypatch.setattr(recommender.IdIndex, "from_dict", lambda data: built.append(1) or from_dict(data))
    handler, first, second = RecommenderHandler(), _loaded("a"), _loaded("b")

    answers = [handler.recommend(first, {"user_id": "u2", "k": 2}) for _ in range(3)]
    handler.recommend(second, {"user_id": "u1", "k": 2})

    assert len(built) == 2  # one per model digest
    index = from_dict(first.config["id_index"])
    expected = recommender.recommend(first.module, index, "u2", 2, exclude=set())
    assert answers[0]["items"] == [{"item_id": i, "score": round(s, 6)} for i, s in expected]
    assert answers[0] == answers[2] and answers[0]["model_version"] == 2
