"""The project's layers and the rule between them, read from the source's import statements.

    resources  <-  domain  <-  assets  <-  pipelines  <-  deploy
    serving: resources, the domain's model contracts and itself only
    examples, benchmarks: anything; nothing in production imports them

A module may import its own layer and the layers below it. Imports are read
with `ast` from every `.py` file (function-level and `TYPE_CHECKING` imports
included), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RANK = {"resources": 0, "domain": 1, "assets": 2, "pipelines": 3, "deploy": 4}
SERVING_MAY_IMPORT = {"resources", "domain", "serving"}
TOP = "examples", "benchmarks"  # may import anything; production never imports them
PRODUCTION = (*RANK, "serving")
# Libraries a layer may not import directly: domain code and servers run without the orchestrator.
BANNED = {
    "domain": {"dagster", "mlflow"},  # Spark transformations are domain code; orchestration is not
    "serving": {"dagster", "pyspark", "mlflow", "great_expectations", "cleanlab", "sklearn", "tink"},
}


@dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for package in (*PRODUCTION, *TOP):
        for path in sorted((root / package).rglob("*.py")):
            yield ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"), path


def imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level if not path.name == "__init__.py" else None]
                if path.name == "__init__.py" and node.level > 1:
                    base = base[: -(node.level - 1)]
                yield ".".join([*base, node.module or ""]).strip("."), node.lineno
            elif node.module:
                yield node.module, node.lineno


def why_forbidden(layer: str, target: str) -> str | None:
    """Why a module of `layer` may not import the top-level package `target` (None: it may)."""
    if target in TOP or target == "tests":
        return f"production code never imports {target}/"
    if target in BANNED.get(layer, ()):
        return f"{layer}/ runs without {target}"
    if layer == "serving" and target in RANK and target not in SERVING_MAY_IMPORT:
        return "serving/ may use resources and domain only"
    if layer in RANK and target == "serving":
        return "serving/ sits beside the pipeline, not below it"
    if layer in RANK and target in RANK and RANK[target] > RANK[layer]:
        return f"{layer}/ may not import the higher {target}/"
    return None


def violations(root: Path) -> list[Violation]:
    """Every import in the tree under `root` that breaks the layering."""
    found = []
    for module, path in modules(root):
        layer = module.split(".")[0]
        if layer in TOP:
            continue
        for imported, line in imports(path, module):
            why = why_forbidden(layer, imported.split(".")[0])
            if why:
                found.append(Violation(module, imported, line, why))
    return found
