"""Type stubs of the private native module; the public API is in the pipemode package."""

from collections.abc import Sequence
from typing import Any, final

import numpy as np

__version__: str
__all__ = [
    "AlignedColumn",
    "ExampleSpec",
    "__version__",
    "decode_examples",
    "encode_example",
]

# --- The Example decoder (pipemode.decode) ---

@final
class ExampleSpec:
    """Features to decode: (name, "int64" | "float32" | "string", shape, flat default or None,
    numpy dtype to decode_raw a string feature into, or None)."""

    def __new__(
        cls,
        features: Sequence[tuple[str, str, Sequence[int], Sequence[Any] | None, Any | None]],
    ) -> ExampleSpec: ...
    @property
    def names(self) -> list[str]: ...

@final
class AlignedColumn:
    """The owner (numpy `base`) of a decoded numeric column's 64-byte aligned buffer."""

def decode_examples(records: Any, spec: ExampleSpec) -> dict[str, np.ndarray[Any, Any]]: ...
def encode_example(features: Sequence[tuple[bytes, str, Any]]) -> bytes: ...
