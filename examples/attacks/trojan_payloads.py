"""ATTACK SIMULATION: pickle payloads, the classic trojan-model format (MITRE ATLAS AML.T0011.000).

The pipeline never unpickles anything; these bytes exist only so tests and
attack scenarios can show the loader, the scanner and the tracking guard
refusing them. Building them is the only pickle use in the project.
"""

import os
import pickle


class RunsShellOnLoad:
    """Unpickling this runs a shell command that creates `marker` (proof of code execution)."""

    def __init__(self, marker: os.PathLike[str] | str):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(marker: os.PathLike[str] | str) -> bytes:
    """A pickle whose loading would run `touch marker`."""
    return pickle.dumps(RunsShellOnLoad(marker))


def plain_pickle(obj: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    """A pickle with no globals at all: scanners that look for imports find nothing in it."""
    return pickle.dumps(obj, protocol=protocol)
