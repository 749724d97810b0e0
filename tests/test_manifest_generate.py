"""`pipemode generate --images` and the image-classification example, run through the runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipemode.cli import main
from pipemode.examples import IMAGE_CLASSIFICATION
from pipemode.generate import IMAGE_MANIFEST, generate_images

Image = pytest.importorskip("PIL.Image")


def manifest_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / IMAGE_MANIFEST).read_text().splitlines()]


def test_images_and_their_manifest(tmp_path: Path) -> None:
    made = generate_images(tmp_path, 30, classes=3, size=16, seed=2)
    lines = manifest_lines(tmp_path)
    assert made.files == [tmp_path / IMAGE_MANIFEST] and made.records == 30
    assert [line["class"] for line in lines] == [i % 3 for i in range(30)]
    colours = {c: [] for c in range(3)}
    for line in lines:
        with Image.open(tmp_path / line["source-ref"]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (16, 16))
            colours[line["class"]].append(np.asarray(image, dtype=float).mean(axis=(0, 1)))
    means = [np.mean(colours[c], axis=0) for c in range(3)]
    # Each class has a colour of its own, far apart from the others' next to the noise.
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(means[a] - means[b]).max() > 50
    assert made.bytes == sum(p.stat().st_size for p in (tmp_path / "images").iterdir())


def test_the_seed_decides_the_images_and_a_prefix_the_references(tmp_path: Path) -> None:
    generate_images(tmp_path / "a", 3, seed=5)
    generate_images(tmp_path / "b", 3, seed=5, ref_prefix="s3://bucket/train/")
    assert [line["source-ref"] for line in manifest_lines(tmp_path / "b")] == [
        f"s3://bucket/train/images/{i:05d}.jpg" for i in range(3)
    ]
    for name in ("00000.jpg", "00002.jpg"):
        first, second = (tmp_path / d / "images" / name for d in ("a", "b"))
        assert first.read_bytes() == second.read_bytes()


def test_the_command_writes_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train"
    assert main(["generate", str(out), "--images", "--records", "4", "--image-size", "8"]) == 0
    assert len(manifest_lines(out)) == 4
    assert "4 JPEG images" in capsys.readouterr().err


@pytest.mark.tf
@pytest.mark.slow
def test_the_example_learns_the_classes_through_local_pipe_mode(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    for channel, count, seed in (("train", 240, 0), ("eval", 60, 1)):
        generate_images(tmp_path / channel, count, classes=2, seed=seed)
    config = [
        {
            "ChannelName": channel,
            "RecordWrapperType": "RecordIO",
            "ShuffleConfig": {"Seed": 1},
            "DataSource": {
                "S3DataSource": {
                    "S3Uri": str(tmp_path / channel / IMAGE_MANIFEST),
                    "S3DataType": "AugmentedManifestFile",
                    "AttributeNames": ["source-ref", "class"],
                }
            },
        }
        for channel in ("train", "eval")
    ]
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = main(
        [
            "train",
            "--input-data-config",
            str(tmp_path / "config.json"),
            "--output-path",
            str(tmp_path / "jobs"),
            "--job-name",
            "images",
            "--hyperparameter",
            "epochs=4",
            str(IMAGE_CLASSIFICATION),
        ]
    )
    assert code == 0
    metrics_file = tmp_path / "jobs/images/algo-1/output/data/metrics.json"
    metrics = json.loads(metrics_file.read_text())
    assert metrics["eval_accuracy"] > 0.9, metrics
    assert (tmp_path / "jobs/images/output/model.tar.gz").is_file()
