"""The SageMaker Pipe Mode tutorial's synthetic data set.

Record i belongs to class `i % classes`; its `data` feature holds `dimension` float64 values drawn
from a normal distribution with scale 1 and mean `int(class - classes / 2)`, as raw bytes, and its
`labels` feature the class as int64. The values are drawn in blocks (numpy, vectorised) from one
generator seeded with `seed`, in record order, so the data does not depend on how many files it is
split into. Records are written with pipemode's Rust writer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipemode.decode import encode_example
from pipemode.reader import RecordWriter

__all__ = ["GenerateResult", "generate"]

_SUFFIXES = {"RecordIO": "recordio", "TFRecord": "tfrecord"}
# Records drawn per numpy call: big enough to amortise the call, small enough to stay in cache.
_BLOCK = 512


@dataclass(frozen=True)
class GenerateResult:
    files: list[Path]
    records: int
    bytes: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def generate(
    out_dir: str | Path,
    records: int,
    *,
    dimension: int = 1024,
    classes: int = 2,
    record_format: str = "RecordIO",
    files: int = 1,
    seed: int = 0,
) -> GenerateResult:
    """Writes `records` records over `files` files named `part-NNNNN.<format>` in `out_dir`."""
    if record_format not in _SUFFIXES:
        raise ValueError(f"record_format must be RecordIO or TFRecord, not {record_format!r}")
    if records < 0 or dimension < 1 or classes < 1 or files < 1:
        raise ValueError("records must be >= 0, and dimension, classes and files >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, records, files + 1).astype(np.int64)
    paths = []
    total = 0
    started = time.perf_counter()
    for index in range(files):
        path = out / f"part-{index:05d}.{_SUFFIXES[record_format]}"
        with RecordWriter(str(path), record_format) as writer:
            for start in range(int(bounds[index]), int(bounds[index + 1]), _BLOCK):
                stop = min(start + _BLOCK, int(bounds[index + 1]))
                labels = np.arange(start, stop, dtype=np.int64) % classes
                means = np.trunc(labels - classes / 2)  # int() of the mean, as the tutorial
                data = rng.standard_normal((stop - start, dimension)) + means[:, None]
                data = data.astype("<f8", copy=False)
                for row, label in zip(data, labels.tolist()):
                    record = encode_example({"data": row.tobytes(), "labels": [label]})
                    writer.write(record)
                    total += len(record)
        paths.append(path)
    return GenerateResult(paths, records, total, time.perf_counter() - started)
