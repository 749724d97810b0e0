"""Training scripts that run unchanged on SageMaker and under `pipemode train`.

`tutorial.py` is the SageMaker Pipe Mode tutorial's script in modern Keras; `tutorial_dense.py`
is the same with the records decoded in Rust (`PipeModeDataset(features=...)`); `tutorial_torch.py`
the same model and data in PyTorch (`pipemode.torch.PipeModeDataset`); `image_classification.py`
a small CNN on an augmented manifest of JPEG images (`PipeModeDataset(attribute_names=...)`). They
ship inside the package so that `pipemode demo` finds them wherever pipemode is installed.
"""

from pathlib import Path

EXAMPLES = Path(__file__).parent
TUTORIAL = EXAMPLES / "tutorial.py"
TUTORIAL_DENSE = EXAMPLES / "tutorial_dense.py"
TUTORIAL_TORCH = EXAMPLES / "tutorial_torch.py"
IMAGE_CLASSIFICATION = EXAMPLES / "image_classification.py"
