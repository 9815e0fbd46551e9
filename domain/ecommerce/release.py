"""The recommender's release contract: its release line and the architectures a loader may build.

Promotion publishes under `MODEL_NAME`; servers and checks build only the
architectures named here, from code, and load nothing but safetensors into them.
"""

from domain.ecommerce.recommender import build_from_architecture

MODEL_NAME = "ecommerce-recommender"
ARCHITECTURES = {"matrix_factorization": build_from_architecture}
