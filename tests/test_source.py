"""Where the bytes come from: a regular file changed under a reader, and the read buffer's memory.

Each case runs in a child process, so a signal that kills it (SIGBUS from a file truncated
under a mapping, SIGABRT from an allocation over an address-space limit) fails one test instead
of killing pytest.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from pipemode import RecordWriter

RECORD = 8230  # the tutorial's records


def run_child(script: str, *args: str) -> dict[str, object]:
    """Runs `script` in a fresh Python with `args` and returns the JSON it prints last."""
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise AssertionError(f"the reader's process was killed by {name}:\n{child.stderr}")
    assert child.returncode == 0, child.stderr
    result: dict[str, object] = json.loads(child.stdout.splitlines()[-1])
    return result


TRUNCATE_WHILE_READING = """
    import json, os, sys
    from pipemode import CorruptRecordError, RecordReader

    path, cut = sys.argv[1], int(sys.argv[2])
    records = 0
    with RecordReader(path, "TFRecord", batch_size=64, buffer_size=65536, prefetch=1) as reader:
        batches = reader.batches()
        records += len(next(batches))
        os.truncate(path, cut)  # what `cp new old` does first, while the job reads `old`
        try:
            for batch in batches:
                records += len(batch)
            print(json.dumps({"records": records, "error": None}))
        except CorruptRecordError as error:
            result = {"records": records, "error": str(error), "path": error.path}
            print(json.dumps({**result, "offset": error.offset}))
"""


def write_records(path: Path, count: int) -> None:
    with RecordWriter(path, "TFRecord") as writer:
        for i in range(count):
            writer.write(bytes([i % 256]) * RECORD)


def test_a_file_truncated_while_read_is_an_error_naming_it_and_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "train.tfrecord"
    write_records(path, 2000)  # 16.5 MB; the reader runs at most a few batches ahead
    size = path.stat().st_size
    cut = size // 2 + 5000  # inside the data of record 1001
    result = run_child(TRUNCATE_WHILE_READING, str(path), str(cut))
    assert result["error"] is not None, result
    assert result["path"] == str(path)
    assert result["offset"] == cut
    assert str(path) in str(result["error"])
    assert f"at byte offset {cut}" in str(result["error"])
    assert f"held {size} bytes when it was opened" in str(result["error"])
    # Every record wholly before the cut was read, and none after it.
    assert result["records"] == cut // (RECORD + 16)


def test_a_file_truncated_at_a_record_boundary_is_not_a_clean_end(tmp_path: Path) -> None:
    path = tmp_path / "train.tfrecord"
    write_records(path, 2000)
    cut = 1000 * (RECORD + 16)
    result = run_child(TRUNCATE_WHILE_READING, str(path), str(cut))
    assert result["records"] == 1000
    assert result["offset"] == cut, result
    assert "truncated" in str(result["error"])


def test_a_file_truncated_to_nothing_while_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.tfrecord"
    write_records(path, 2000)
    result = run_child(TRUNCATE_WHILE_READING, str(path), "0")
    assert result["error"] is not None, result
    assert result["path"] == str(path)
    assert "it holds 0 now" in str(result["error"])
