"""The lesion classifier's release contract: its release line and the architectures a loader may build.

Promotion publishes under `MODEL_NAME`; servers and checks build only the
architectures named here, from code, and load nothing but safetensors into them.
"""

from domain.healthcare import lesion_cnn

MODEL_NAME = "healthcare-lesion-cnn"  # the release line in the registry and the release folder
ARCHITECTURES = {lesion_cnn.MODEL_NAME: lesion_cnn.build_from_architecture}
