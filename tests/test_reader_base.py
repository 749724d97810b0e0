"""What every reader shares: the note about a long wait, and stopping readers at exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
from pipemode import PipeTimeoutError, RecordReader, reader_base


@pytest.fixture
def quick_note(monkeypatch):
    monkeypatch.setattr(reader_base, "WAIT_NOTE_AFTER", 0.2)


def test_a_missing_path_is_noted_once_then_times_out(tmp_path, caplog, quick_note):
    missing = tmp_path / "train_0"
    with caplog.at_level(logging.WARNING, logger="pipemode"), pytest.raises(PipeTimeoutError):
        list(RecordReader(missing, open_timeout=1.0))
    (note,) = [r.getMessage() for r in caplog.records]
    assert f"for {missing} to appear (it does not exist" in note
    assert "for up to 1 s (open_timeout), then PipeTimeoutError" in note


def test_a_fifo_without_a_writer_is_noted_as_such(tmp_path, caplog, quick_note):
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING, logger="pipemode"), pytest.raises(PipeTimeoutError):
        list(RecordReader(fifo, open_timeout=1.0))
    (note,) = [r.getMessage() for r in caplog.records]
    assert f"for a writer to open the FIFO {fifo}" in note


def test_a_quick_source_is_not_noted(tmp_path, caplog, quick_note):
    path = tmp_path / "lines"
    path.write_bytes(b"a\nb\n")
    with caplog.at_level(logging.WARNING, logger="pipemode"):
        assert list(RecordReader(path, "TextLine")) == [b"a", b"b"]
    assert caplog.records == []


AT_EXIT = """
import os, sys, threading, time
from pipemode import RecordReader, reader_base

reader_base.WAIT_NOTE_AFTER = 0  # so the read below waits in next_batch itself
fifo = sys.argv[1]
writer = os.open(fifo, os.O_RDWR)  # a writer that never writes: a read waits for ever
reader = RecordReader(fifo, open_timeout=None)
def read():
    try:
        list(reader)
    except RuntimeError:
        pass  # refused, if it came back for more after the reader was closed
thread = threading.Thread(target=read)
thread.start()
time.sleep(0.5)
started = time.monotonic()
reader_base.stop_readers_at_exit()  # what atexit runs
thread.join(10)
print("blocked" if thread.is_alive() else "returned", round(time.monotonic() - started, 1))
try:
    list(RecordReader(fifo))
except RuntimeError as refused:
    print(refused)
"""


def test_at_exit_a_waiting_read_returns_and_no_new_read_starts(tmp_path):
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, str(fifo)], capture_output=True, timeout=60, check=True
    )
    lines = done.stdout.decode().splitlines()
    assert lines[0].split()[0] == "returned", done.stdout
    assert float(lines[0].split()[1]) < 2
    assert lines[1] == "pipemode: no new reads while the interpreter exits"
    assert time.monotonic() - started < 30
