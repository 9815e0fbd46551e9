"""The layers import downwards only, and production code never imports the examples or the lab."""

from pathlib import Path

import pytest

from tests.architecture.layers import violations

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_keeps_its_layers():
    found = violations(REPO)
    assert not found, "\n".join(map(str, found))


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("resources/store.py", "from assets.batches import finish_intake\n", "higher assets/"),
        ("domain/ecommerce/records.py", "import pipelines.ecommerce\n", "higher pipelines/"),
        ("domain/healthcare/dicom.py", "import dagster as dg\n", "runs without dagster"),
        ("assets/promotion.py", "def f():\n    from serving.app import create_app\n", "beside the pipeline"),
        ("pipelines/ecommerce.py", "from examples.attacks import lab\n", "never imports examples/"),
        ("serving/app.py", "from assets.ecommerce import deployment\n", "resources and domain only"),
        ("serving/worker.py", "import mlflow\n", "runs without mlflow"),
        ("assets/ecommerce/checks.py", "from ..batches import finish_intake\nfrom . import x\n", None),
    ],
)
def test_a_forbidden_import_is_reported(tmp_path, module, source, why):
    root = _tree(tmp_path, {module: source, "examples/demo.py": "import pipelines.ecommerce\n"})
    found = violations(root)
    if why is None:  # relative imports within a layer are fine
        assert found == []
    else:
        assert [v.why for v in found if why in v.why], found
        assert all(v.module != "examples.demo" for v in found)  # examples may import anything
