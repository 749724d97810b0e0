"""PipeModeChannel: the incumbent's construction checks, default folders and the epoch counter."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipemode import CorruptRecordError, PipeModeChannel, PipeModeDatasetException
from pipemode.channel import default_config_dir, default_pipe_dir, default_state_dir


def test_construction_creates_state_dir_and_zero_counter(pipe_job):
    pipe_job.add_channel("train")
    channel = PipeModeChannel("train", **pipe_job.dirs())
    assert pipe_job.state_dir.is_dir()
    state = pipe_job.state_dir / ".train-pipe_mode-state"
    assert state.read_bytes() == b"0"
    assert (pipe_job.state_dir / ".train-pipe_mode-lock").exists()
    assert channel.peek_next_epoch() == 0


def test_missing_config_is_file_not_found_after_state_dir_is_made(tmp_path):
    state_dir = tmp_path / "state" / "nested"
    with pytest.raises(FileNotFoundError, match=r"inputdataconfig\.json"):
        PipeModeChannel("train", state_dir=state_dir, pipe_dir=tmp_path, config_dir=tmp_path)
    assert state_dir.is_dir()


def test_missing_channel(pipe_job):
    pipe_job.add_channel("train")
    with pytest.raises(
        PipeModeDatasetException,
        match=r"^Channel eval not found in Training Job InputDataConfig$",
    ):
        PipeModeChannel("eval", **pipe_job.dirs())


@pytest.mark.parametrize("mode", ["File", "FastFile", None])
def test_channel_not_in_pipe_mode(pipe_job, mode):
    pipe_job.add_channel("train", mode="Pipe")
    config = pipe_job.input_data_config
    if mode is None:
        del config["train"]["TrainingInputMode"]
    else:
        config["train"]["TrainingInputMode"] = mode
    (pipe_job.config_dir / "inputdataconfig.json").write_text(json.dumps(config))
    with pytest.raises(
        PipeModeDatasetException, match=r"^Channel train is not a PipeMode channel$"
    ):
        PipeModeChannel("train", **pipe_job.dirs())


def test_pipe_mode_is_case_insensitive(pipe_job):
    pipe_job.add_channel("train", mode="PIPE")
    assert PipeModeChannel("train", **pipe_job.dirs()).channel == "train"


def test_invalid_record_format(pipe_job):
    pipe_job.add_channel("train")
    with pytest.raises(PipeModeDatasetException, match=r"^Invalid record format: CSV"):
        PipeModeChannel("train", record_format="CSV", **pipe_job.dirs())
    # Rejected before the counter is touched: a bad dataset consumes nothing.
    assert not (pipe_job.state_dir / ".train-pipe_mode-state").exists()


@pytest.mark.parametrize("record_format", ["RecordIO", "TextLine", "CSV"])
def test_skipping_corrupted_records_only_with_tfrecord(pipe_job, record_format):
    pipe_job.add_channel("train")
    # The incumbent checks this before the format, so it wins over an invalid format too.
    with pytest.raises(PipeModeDatasetException, match="only be set for record_format='TFRecord'"):
        PipeModeChannel("train", record_format, max_corrupted_records_to_skip=2, **pipe_job.dirs())
    channel = PipeModeChannel(
        "train", "TFRecord", max_corrupted_records_to_skip=2, **pipe_job.dirs()
    )
    assert channel.max_corrupted_records_to_skip == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"multipart": "bogus"}, r'^Invalid multipart mode: "bogus"'),
        ({"open_timeout": -1.0}, r"^open_timeout must be a number of seconds >= 0 or None"),
        ({"max_corrupted_records_to_skip": -1}, r"^max_corrupted_records_to_skip must be >= 0"),
    ],
)
def test_bad_reader_options_fail_at_construction_touching_no_counter(pipe_job, option, message):
    pipe_job.add_channel("train")
    with pytest.raises(PipeModeDatasetException, match=message):
        PipeModeChannel("train", **option, **pipe_job.dirs())
    assert not (pipe_job.state_dir / ".train-pipe_mode-state").exists()


def test_a_bad_batch_size_fails_before_the_epoch_is_claimed(pipe_job):
    pipe_job.add_channel("train")
    channel = PipeModeChannel("train", **pipe_job.dirs())
    with pytest.raises(PipeModeDatasetException, match=r"^batch_size must be >= 1, not 0$"):
        channel.next_epoch(batch_size=0)
    assert channel.peek_next_epoch() == 0


def test_checks_run_in_the_incumbents_order(pipe_job):
    # A File-mode channel with an invalid format: the channel check comes first.
    pipe_job.add_channel("train", mode="File")
    with pytest.raises(PipeModeDatasetException, match="is not a PipeMode channel"):
        PipeModeChannel("train", record_format="CSV", **pipe_job.dirs())


def test_default_folders_follow_sagemaker_env(monkeypatch, tmp_path):
    for name in ("SAGEMAKER_BASE_DIR", "SM_INPUT_DIR", "SM_INPUT_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert default_state_dir() == Path("/opt/ml/pipe_state")
    assert default_pipe_dir() == Path("/opt/ml/input/data")
    assert default_config_dir() == Path("/opt/ml/input/config")

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    assert default_state_dir() == tmp_path / "ml" / "pipe_state"
    assert default_pipe_dir() == tmp_path / "ml" / "input" / "data"
    assert default_config_dir() == tmp_path / "ml" / "input" / "config"

    monkeypatch.setenv("SM_INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(tmp_path / "cfg"))
    assert default_pipe_dir() == tmp_path / "in" / "data"
    assert default_config_dir() == tmp_path / "cfg"
    assert default_state_dir() == tmp_path / "ml" / "pipe_state"


def test_channel_with_default_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.delenv("SM_INPUT_DIR", raising=False)
    monkeypatch.delenv("SM_INPUT_CONFIG_DIR", raising=False)
    config_dir = tmp_path / "input" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "inputdataconfig.json").write_text('{"train": {"TrainingInputMode": "Pipe"}}')
    channel = PipeModeChannel("train")
    assert channel.claim_next_epoch() == (0, tmp_path / "input" / "data" / "train_0")
    assert (tmp_path / "pipe_state" / ".train-pipe_mode-state").read_bytes() == b"1"


def test_claims_count_up_and_are_never_reset(pipe_job):
    pipe_job.add_channel("train")
    first = PipeModeChannel("train", **pipe_job.dirs())
    assert first.claim_next_epoch() == (0, pipe_job.pipe_dir / "train_0")
    assert first.claim_next_epoch() == (1, pipe_job.pipe_dir / "train_1")
    # A second reader on the channel, or a re-created one, shares the counter.
    second = PipeModeChannel("train", **pipe_job.dirs())
    assert second.claim_next_epoch().number == 2
    assert first.claim_next_epoch().number == 3
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"4"


def test_channels_count_independently(pipe_job):
    pipe_job.add_channel("train")
    pipe_job.add_channel("eval")
    train = PipeModeChannel("train", **pipe_job.dirs())
    evaluation = PipeModeChannel("eval", **pipe_job.dirs())
    assert [train.claim_next_epoch().number for _ in range(3)] == [0, 1, 2]
    assert evaluation.claim_next_epoch() == (0, pipe_job.pipe_dir / "eval_0")


def test_counter_written_by_another_reader_is_continued(pipe_job):
    # What an incumbent reader that already read 7 epochs leaves behind.
    pipe_job.add_channel("train")
    pipe_job.state_dir.mkdir()
    (pipe_job.state_dir / ".train-pipe_mode-state").write_bytes(b"7")
    channel = PipeModeChannel("train", **pipe_job.dirs())
    assert channel.claim_next_epoch().number == 7


def test_garbage_counter_is_a_clear_error(pipe_job):
    pipe_job.add_channel("train")
    channel = PipeModeChannel("train", **pipe_job.dirs())
    channel.state_file.write_text("seven")
    with pytest.raises(PipeModeDatasetException, match=r"\.train-pipe_mode-state holds 'seven'"):
        channel.claim_next_epoch()


@pytest.mark.parametrize(
    ("held", "shown"),
    # Bytes that are not ASCII are shown escaped.
    [(b"-3", "'-3'"), (b"\xff\xfe\x00", repr("\\xff\\xfe\x00")), (b"", "''"), (b" 3", "' 3'")],
)
def test_counter_that_is_not_a_decimal_index_is_a_clear_error(pipe_job, held, shown):
    pipe_job.add_channel("train")
    channel = PipeModeChannel("train", **pipe_job.dirs())
    channel.state_file.write_bytes(held)
    with pytest.raises(PipeModeDatasetException) as raised:
        channel.claim_next_epoch()
    assert f"{channel.state_file} holds {shown}, not an epoch index" in str(raised.value)


KILLED_CLAIMER = """
import sys
from pipemode.channel import PipeModeChannel
state_dir, pipe_dir, config_dir = sys.argv[1:]
channel = PipeModeChannel("train", state_dir=state_dir, pipe_dir=pipe_dir, config_dir=config_dir)
print("claiming", flush=True)
while True:
    channel.claim_next_epoch()
"""


def test_a_process_killed_while_it_claims_leaves_a_whole_counter(pipe_job):
    # SIGKILL lands at a random point of a tight claim loop; with the count written in place
    # (truncate, then write) about two kills in three emptied the file for good.
    pipe_job.add_channel("train")
    channel = PipeModeChannel("train", **pipe_job.dirs())
    dirs = pipe_job.dirs()
    args = [dirs["state_dir"], dirs["pipe_dir"], dirs["config_dir"]]
    last = 0
    for kill in range(12):
        claimer = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLAIMER, *args], stdout=subprocess.PIPE
        )
        try:
            assert claimer.stdout is not None
            assert claimer.stdout.readline() == b"claiming\n"
            time.sleep(0.002 * kill)
        finally:
            claimer.kill()
            claimer.wait(timeout=10)
            claimer.stdout.close()
        now = channel.peek_next_epoch()
        assert now >= last
        last = now
    assert channel.claim_next_epoch().number == last


CLAIMER = """
import sys
from pipemode import PipeModeChannel
state_dir, pipe_dir, config_dir, claims = sys.argv[1:]
channel = PipeModeChannel("train", state_dir=state_dir, pipe_dir=pipe_dir, config_dir=config_dir)
print(" ".join(str(channel.claim_next_epoch().number) for _ in range(int(claims))))
"""


def test_processes_share_the_counter_under_the_lock(pipe_job):
    pipe_job.add_channel("train")
    PipeModeChannel("train", **pipe_job.dirs())
    dirs = pipe_job.dirs()
    args = [dirs["state_dir"], dirs["pipe_dir"], dirs["config_dir"], "100"]
    claimers = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, *args], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    claimed = []
    for claimer in claimers:
        out, _ = claimer.communicate(timeout=60)
        assert claimer.returncode == 0
        claimed += [int(index) for index in out.split()]
    assert sorted(claimed) == list(range(400))


def test_an_unread_epoch_claims_nothing(pipe_job):
    pipe_job.add_channel("train")
    # A short wait, so that a reader sent to the wrong (never fed) FIFO fails fast.
    channel = PipeModeChannel("train", open_timeout=5, **pipe_job.dirs())
    unread = channel.next_epoch()
    records, batches = iter(unread), unread.batches()
    del records, batches, unread  # dropped without a read: the epoch stays the channel's
    assert channel.peek_next_epoch() == 0
    pipe_job.feed("train", 0, _recordio([b"first", b"second"]))
    epoch = channel.next_epoch()
    assert list(epoch) == [b"first", b"second"]
    assert epoch.epoch == (0, pipe_job.pipe_dir / "train_0")
    assert channel.peek_next_epoch() == 1


def _recordio(records: list[bytes]) -> bytes:
    return b"".join(
        struct.pack("<II", 0xCED7230A, len(r)) + r + b"\0" * (-len(r) % 4) for r in records
    )


def test_epochs_read_without_tensorflow(pipe_job):
    pipe_job.add_channel("train")
    epochs = [[f"epoch {n} record {i}".encode() for i in range(3000)] for n in range(2)]
    for n, records in enumerate(epochs):
        pipe_job.feed("train", n, _recordio(records))
    channel = PipeModeChannel("train", **pipe_job.dirs())
    first = channel.next_epoch()
    assert list(first) == epochs[0]
    assert first.epoch == (0, pipe_job.pipe_dir / "train_0")
    second = channel.next_epoch(batch_size=500)
    assert [len(batch) for batch in second.batches()] == [500] * 6
    assert second.epoch.number == 1
    with pytest.raises(PipeModeDatasetException, match=r"epoch 1 .* was already read"):
        list(second)
    assert channel.peek_next_epoch() == 2


def test_epoch_errors_name_channel_epoch_and_offset(pipe_job):
    pipe_job.add_channel("train")
    fifo = pipe_job.feed("train", 0, _recordio([b"whole", b"x" * 100])[:-20])
    channel = PipeModeChannel("train", **pipe_job.dirs())
    with pytest.raises(CorruptRecordError) as raised:
        list(channel.next_epoch())
    message = str(raised.value)
    assert "channel 'train' epoch 0" in message
    assert str(fifo) in message
    assert raised.value.offset == 16
