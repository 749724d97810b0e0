"""The SageMaker Pipe Mode tutorial's synthetic data set.

Record i belongs to class `i % classes`; its `data` feature holds `dimension` float64 values drawn
from a normal distribution with scale 1 and mean `int(class - classes / 2)`, as raw bytes, and its
`labels` feature the class as int64. The values are drawn in blocks (numpy, vectorised) from one
generator seeded with `seed`, in record order, so the data does not depend on how many files it is
split into. Records are written with pipemode's Rust writer.

`generate_images` writes the other kind of data Pipe Mode streams: JPEG images and the augmented
manifest that labels them, for an image-classification job on an AugmentedManifestFile channel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipemode.decode import encode_example
from pipemode.reader import RecordWriter

__all__ = ["IMAGE_MANIFEST", "GenerateResult", "generate", "generate_images"]

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


IMAGE_MANIFEST = "train.manifest"


def generate_images(
    out_dir: str | Path,
    images: int,
    *,
    classes: int = 2,
    size: int = 32,
    seed: int = 0,
    ref_prefix: str = "",
) -> GenerateResult:
    """Writes `images` JPEG images and an augmented manifest that labels them, for Pipe Mode.

    Image i is `images/NNNNN.jpg` in `out_dir`, of `size` x `size` RGB pixels, of class
    `i % classes`: a colour of its own for each class (evenly spaced around the hue circle),
    plus noise, so a small model learns to tell them apart. `out_dir/train.manifest` holds one
    line per image, `{"source-ref": ref_prefix + "images/NNNNN.jpg", "class": c}`: with no prefix
    a path relative to the manifest, which a local job reads; with `s3://bucket/folder/`, the
    references of the same files uploaded there.

    JPEG encoding needs Pillow (`pip install 'pipemode[images]'`), imported here only, so that
    pipemode itself needs neither Pillow nor TensorFlow.
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("JPEG images need Pillow: pip install 'pipemode[images]'") from None
    if images < 0 or classes < 1 or size < 1:
        raise ValueError("images must be >= 0, and classes and size >= 1")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hues = np.arange(classes)[:, None] / classes + np.array([0, 1 / 3, 2 / 3])
    colours = 128 + 100 * np.cos(2 * np.pi * hues)  # [classes, 3], one RGB colour per class
    manifest = out / IMAGE_MANIFEST
    total = 0
    started = time.perf_counter()
    with manifest.open("w", encoding="utf-8") as lines:
        for index in range(images):
            label = index % classes
            pixels = colours[label] + rng.normal(0, 24, (size, size, 3))
            name = f"images/{index:05d}.jpg"
            path = out / name
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(
                path, format="JPEG", quality=90
            )
            total += path.stat().st_size
            lines.write(json.dumps({"source-ref": ref_prefix + name, "class": label}) + "\n")
    return GenerateResult([manifest], images, total, time.perf_counter() - started)
