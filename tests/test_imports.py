"""What importing pipemode costs and shows: no framework loaded, only public names, and a clear
message when TensorFlow is asked for but missing.

Each import is checked in a fresh interpreter: in this one, other tests have loaded TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pipemode
import pytest

FRAMEWORKS = ("tensorflow", "torch", "keras")

_FRAMEWORKS_LOADED_BY = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.argv[2:] if name in sys.modules)))
"""


def run_python(code: str, *args: str) -> str:
    child = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    return child.stdout


@pytest.mark.parametrize(
    "module",
    ["pipemode", "pipemode.decode", "pipemode.reader", "pipemode.channel", "pipemode.runner"],
)
def test_importing_loads_no_framework(module: str) -> None:
    loaded = json.loads(run_python(_FRAMEWORKS_LOADED_BY, module, *FRAMEWORKS))
    assert loaded == []


def test_the_import_check_sees_a_framework_that_is_loaded() -> None:
    # The check above is only worth something if it can see a loaded module.
    assert json.loads(run_python(_FRAMEWORKS_LOADED_BY, "json", "json", "torch")) == ["json"]


def test_dir_shows_only_public_names() -> None:
    shown = {name for name in dir(pipemode) if not name.startswith("__")}
    submodules = {
        name
        for name in shown
        # vars(), not getattr(): the lazy PipeModeDataset raises without TensorFlow installed.
        if getattr(vars(pipemode).get(name), "__name__", None) == f"pipemode.{name}"
    }
    assert {"Any", "TYPE_CHECKING", "annotations"}.isdisjoint(shown)
    assert shown - submodules <= set(pipemode.__all__), shown - submodules - set(pipemode.__all__)
    assert {"RecordReader", "DenseReader", "PipeModeChannel"} <= shown


# A finder first on sys.meta_path that answers for TensorFlow as a machine without it would, so
# the check works where TensorFlow is installed.
_WITHOUT_TENSORFLOW = """
import sys
from importlib.abc import MetaPathFinder

class NoTensorFlow(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTensorFlow())
import pipemode  # works without TensorFlow
try:
    from pipemode import PipeModeDataset
except ImportError as error:
    print(type(error).__name__)
    print(error)
else:
    print("imported")
"""


def test_pipemodedataset_without_tensorflow_says_what_to_install() -> None:
    kind, message = run_python(_WITHOUT_TENSORFLOW).split("\n", 1)
    assert kind in ("ImportError", "ModuleNotFoundError")
    assert 'pip install "pipemode[tensorflow]"' in message
