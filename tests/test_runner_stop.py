"""How a job ends: a failure or Ctrl-C stops every host (SIGTERM, then SIGKILL after the stop
grace), the first failure is the reason given, and nothing a script started outlives the job.

The scripts keep the pids of what they start in a folder the `pids` fixture cleans up, so a
test that fails (a runner that hangs, a child left behind) leaves no process running.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipemode.runner import Channel, Estimator, JobConfigError, TrainingFailedError, TrainingJob
from pipemode.runner.host import HostFolder, host_config
from pipemode.runner.processes import ProcessGroups, ScriptProcess
from runner_helpers import (
    PIDS_VARIABLE,
    fifos_under,
    folder_of_files,
    kill_kept_pids,
    process_gone,
    recorded,
    run,
    script,
)


@pytest.fixture
def pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The folder the scripts' `keep_pid` writes to; what is kept there is killed at the end."""
    folder = tmp_path / "pids"
    folder.mkdir()
    monkeypatch.setenv(PIDS_VARIABLE, str(folder))
    yield folder
    kill_kept_pids(folder)


def kept_pid(pids: Path, name: str) -> int:
    return int((pids / name).read_text())


class Runner:
    """`python -m pipemode train ...` in a process of its own, killed if a test leaves it."""

    def __init__(self, args: list[str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipemode", "train", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_for_line(self, text: str) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if text in line:
                return
        raise AssertionError(f"the runner's output ended before {text!r}")

    def finish(self, timeout: float = 30) -> tuple[int, str, float]:
        """The exit code, stderr and seconds taken; a runner still running after `timeout`
        (say, waiting for ever on a host that ignores SIGTERM) fails the test."""
        try:
            _, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(f"the runner did not end within {timeout} s") from None
        return self.process.returncode, stderr, time.monotonic() - self.started


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        if runner.process.poll() is None:
            runner.process.kill()
        runner.process.communicate()


def start(runners: list[Runner], tmp_path: Path, entry: Path, *options: str) -> Runner:
    runner = Runner(
        [*options, "--output-path", str(tmp_path / "out"), "--job-name", "job", str(entry)]
    )
    runners.append(runner)
    return runner


def test_ctrl_c_is_forwarded_to_the_script_and_nothing_is_left(
    tmp_path: Path, pids: Path, runners: list[Runner]
) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x" * 1000})
    entry = script(
        tmp_path,
        """
        keep_pid("script")
        read_epoch("train", 0)
        try:
            print("ready", flush=True)  # inside the try: the test's Ctrl-C may follow at once
            time.sleep(60)
        except KeyboardInterrupt:
            record("interrupted.json", True)
            raise
        """,
    )
    runner = start(runners, tmp_path, entry, "--channel", f"train={data}")
    runner.wait_for_line("ready")
    runner.process.send_signal(signal.SIGINT)
    code, stderr, _ = runner.finish()
    assert code == 128 + signal.SIGINT
    job = tmp_path / "out" / "job"
    assert recorded(job, "interrupted.json") is True
    assert "interrupted by SIGINT" in (job / "algo-1" / "output" / "failure").read_text()
    assert "exit code 130" in stderr
    assert fifos_under(job) == []
    assert process_gone(kept_pid(pids, "script"))


# algo-2 keeps running through SIGTERM; algo-1 fails once algo-2 is ready to resist it.
_STUBBORN_SECOND_HOST = """
import signal
if os.environ["SM_CURRENT_HOST"] == "algo-2":
    signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
    keep_pid("algo-2")
    time.sleep(60)
else:
    wait_for_pid("algo-2")
    print("algo-1 gives up", file=sys.stderr)
    sys.exit(5)
"""


def test_a_host_that_ignores_sigterm_is_killed_after_the_stop_grace(
    tmp_path: Path, pids: Path, runners: list[Runner]
) -> None:
    entry = script(tmp_path, _STUBBORN_SECOND_HOST)
    runner = start(runners, tmp_path, entry, "--instance-count", "2", "--stop-grace", "1")
    code, stderr, seconds = runner.finish()
    assert code == 5, stderr
    assert seconds < 20
    assert process_gone(kept_pid(pids, "algo-2"))
    failure = (tmp_path / "out" / "job" / "output" / "failure").read_text()
    assert failure.startswith("AlgorithmError: train.py on algo-1 exited with code 5\n")
    assert "algo-1: algo-1 gives up" in failure


def test_the_first_failure_is_the_reason_even_after_a_ctrl_c(
    tmp_path: Path, pids: Path, runners: list[Runner]
) -> None:
    entry = script(tmp_path, _STUBBORN_SECOND_HOST)
    runner = start(runners, tmp_path, entry, "--instance-count", "2")
    runner.wait_for_line("algo-2: SIGTERM ignored")  # algo-1 has failed, the job is stopping
    runner.process.send_signal(signal.SIGINT)  # the user loses patience: algo-2 is interrupted
    code, stderr, _ = runner.finish()
    assert code == 5, stderr
    failure = (tmp_path / "out" / "job" / "output" / "failure").read_text()
    assert failure.splitlines()[0] == "AlgorithmError: train.py on algo-1 exited with code 5"
    assert "reason: AlgorithmError: train.py on algo-1 exited with code 5" in stderr
    assert process_gone(kept_pid(pids, "algo-2"))


def test_a_script_that_ignores_ctrl_c_and_sigterm_is_killed_after_the_grace(
    tmp_path: Path, pids: Path, runners: list[Runner]
) -> None:
    entry = script(
        tmp_path,
        """
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        keep_pid("script")
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    runner = start(runners, tmp_path, entry, "--stop-grace", "0.5")
    runner.wait_for_line("ready")
    runner.process.send_signal(signal.SIGINT)
    code, stderr, seconds = runner.finish()
    assert code == 128 + signal.SIGKILL, stderr
    assert seconds < 20
    assert process_gone(kept_pid(pids, "script"))
    failure = (tmp_path / "out" / "job" / "output" / "failure").read_text()
    assert failure.startswith("AlgorithmError: train.py interrupted by SIGINT")


def test_a_script_killed_the_moment_the_grace_ends_is_not_taken_for_a_success(
    tmp_path: Path, pids: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The script dies of SIGKILL between the job's last look at its exit code and its check
    # that every group has ended (widened here, so the race is lost every time): the exit code
    # must still be noted, or the job reports a success.
    kill = ProcessGroups.kill

    def kill_then_pause(self: ProcessGroups) -> None:
        kill(self)
        time.sleep(0.2)

    monkeypatch.setattr(ProcessGroups, "kill", kill_then_pause)
    entry = script(
        tmp_path,
        """
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        keep_pid("script")
        time.sleep(60)
        """,
    )

    def interrupt_once_running() -> None:
        while not (pids / "script").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, to the job running in this process

    interrupter = threading.Thread(target=interrupt_once_running)
    interrupter.start()
    try:
        result = run(tmp_path, entry, [], stop_grace=0.5)
    finally:
        interrupter.join()
    assert result.exit_code == 128 + signal.SIGKILL, result.failure


def test_a_failed_channel_stops_a_script_that_ignores_sigterm(
    tmp_path: Path, pids: Path, runners: list[Runner]
) -> None:
    data = folder_of_files(tmp_path / "d", {"broken.gz": b"this is not gzip"})
    entry = script(
        tmp_path,
        """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        keep_pid("script")
        read_epoch("zipped", 0)
        time.sleep(60)
        """,
    )
    config = str(_gzip_config(tmp_path, data))
    runner = start(runners, tmp_path, entry, "--stop-grace", "0.5", "--input-data-config", config)
    code, stderr, seconds = runner.finish()
    assert code == 1, stderr
    assert seconds < 20
    assert process_gone(kept_pid(pids, "script"))
    failure = (tmp_path / "out" / "job" / "output" / "failure").read_text()
    assert failure.startswith("channel zipped on algo-1 failed: ")
    assert "broken.gz" in failure


def _gzip_config(tmp_path: Path, data: Path) -> Path:
    config = tmp_path / "input.json"
    config.write_text(
        json.dumps(
            [
                {
                    "ChannelName": "zipped",
                    "InputMode": "Pipe",
                    "CompressionType": "Gzip",
                    "DataSource": {"S3DataSource": {"S3Uri": str(data)}},
                }
            ]
        )
    )
    return config


# The script hands its FIFO and its stdout and stderr to a child that outlives it. The child
# says when it is ready (its signal disposition set), as the script's `keep_pid` would.
_FORKS_A_CHILD = """
import subprocess
fifo = open(os.path.join(DATA, "train_0"), "rb")
fifo.read(10)
child = subprocess.Popen([sys.executable, "-c", CHILD], pass_fds=[fifo.fileno()])
keep_pid("child", child.pid)
wait_for_pid("child-ready")
record("done_at.json", time.time())
print("the script is done", flush=True)
"""


def _child(disposition: str = "pass") -> str:
    return (
        f"import os, signal, time; {disposition}; "
        "ready = os.path.join(os.environ['PIPEMODE_TEST_PIDS'], 'child-ready'); "
        "open(ready + '.tmp', 'w').write(str(os.getpid())); os.rename(ready + '.tmp', ready); "
        "time.sleep(60)"
    )


_CHILD_IGNORING_SIGTERM = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"


@pytest.mark.parametrize(
    ("child", "grace"),
    [("pass", None), (_CHILD_IGNORING_SIGTERM, "0.5")],
    ids=["ends-on-sigterm", "ignores-sigterm"],
)
def test_a_child_holding_the_fifo_and_stdout_ends_with_the_job(
    tmp_path: Path, pids: Path, runners: list[Runner], child: str, grace: str | None
) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x" * (4 << 20)})
    body = f"CHILD = {_child(child)!r}\n" + _FORKS_A_CHILD
    entry = script(tmp_path, body)
    options = ["--channel", f"train={data}"] + (["--stop-grace", grace] if grace else [])
    runner = start(runners, tmp_path, entry, *options)
    code, stderr, _ = runner.finish()
    assert code == 0, stderr
    assert process_gone(kept_pid(pids, "child"))
    # Promptly: not after a wait for threads blocked on the child's pipes to give up.
    assert time.time() - recorded(tmp_path / "out" / "job", "done_at.json") < 3, stderr


def test_fit_returns_with_every_thread_it_started_ended(tmp_path: Path, pids: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x" * (4 << 20)})
    entry = script(tmp_path, f"CHILD = {_child()!r}\n" + _FORKS_A_CHILD)
    before = set(threading.enumerate())
    estimator = Estimator(entry, output_path=tmp_path / "out", stop_grace=5)
    result = estimator.fit({"train": data}, live=False)
    assert time.time() - recorded(result.job_dir, "done_at.json") < 3
    assert [t.name for t in threading.enumerate() if t not in before] == []
    assert process_gone(kept_pid(pids, "child"))


def test_a_failed_job_reports_its_failure_file_and_reason_not_a_model(tmp_path: Path) -> None:
    entry = script(tmp_path, "print('out of memory, say', file=sys.stderr); sys.exit(3)\n")
    summary = io.StringIO()
    job = TrainingJob(entry, [], output_path=tmp_path / "out", job_name="job")
    result = job.run(stdout=io.StringIO(), stderr=summary, live=False)
    failure_file = tmp_path / "out" / "job" / "output" / "failure"
    assert result.failure_file == failure_file
    assert failure_file.read_text() == result.failure
    assert result.failure == "AlgorithmError: train.py exited with code 3\nout of memory, say\n"
    # The host's own /opt/ml/output/failure holds it too, as on SageMaker.
    assert (tmp_path / "out" / "job" / "algo-1" / "output" / "failure").read_text() == (
        result.failure
    )
    lines = summary.getvalue().splitlines()
    assert f"  failure: {failure_file}" in lines
    assert "  reason: AlgorithmError: train.py exited with code 3" in lines
    assert not any("model" in line for line in lines)


def test_a_reason_the_script_wrote_itself_is_kept(tmp_path: Path) -> None:
    entry = script(
        tmp_path,
        """
        with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as f:
            f.write("the learning rate diverged")
        sys.exit(2)
        """,
    )
    estimator = Estimator(entry, output_path=tmp_path / "out")
    with pytest.raises(TrainingFailedError) as failed:
        estimator.fit(live=False)
    result = failed.value.result
    assert result.failure is not None
    assert result.failure.splitlines()[:2] == [
        "AlgorithmError: train.py exited with code 2",
        "the learning rate diverged",
    ]
    host_file = result.job_dir / "algo-1" / "output" / "failure"
    assert host_file.read_text() == "the learning rate diverged"


def test_a_successful_job_writes_no_failure(tmp_path: Path) -> None:
    result = run(tmp_path, script(tmp_path, "pass\n"), [])
    assert result.failure is None and result.failure_file is None
    assert not (result.job_dir / "output" / "failure").exists()


def test_host_config_builds_each_hosts_files_and_environment_without_io(tmp_path: Path) -> None:
    job = TrainingJob(
        tmp_path / "train.py",
        [Channel("train", "s3://b/train", distribution="ShardedByS3Key"), Channel("eval", "x")],
        hyperparameters={"lr": "0.1"},
        script_args=["--more"],
    )
    folder = HostFolder(tmp_path / "job" / "algo-2")
    config = host_config(job, "job", ["algo-1", "algo-2"], "algo-2", folder)
    assert not (tmp_path / "job").exists()  # it writes nothing
    assert config.files["resourceconfig.json"] == {
        "current_host": "algo-2",
        "current_instance_type": "local",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1", "algo-2"],
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "local",
                "hosts": ["algo-1", "algo-2"],
            }
        ],
        "network_interface_name": "lo",
    }
    assert config.files["hyperparameters.json"] == {"lr": "0.1"}
    assert list(config.files["inputdataconfig.json"]) == ["train", "eval"]
    assert config.files["inputdataconfig.json"]["train"]["S3DistributionType"] == "ShardedByS3Key"
    env = config.environment
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == config.files["resourceconfig.json"]
    assert json.loads(env["SM_INPUT_DATA_CONFIG"]) == config.files["inputdataconfig.json"]
    assert env["SM_CURRENT_HOST"] == "algo-2"
    assert env["SM_CHANNEL_EVAL"] == str(folder.data_dir / "eval")
    assert json.loads(env["SM_USER_ARGS"]) == ["--lr", "0.1", "--more"]
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["resource_config"] == config.files["resourceconfig.json"]
    assert training_env["channel_input_dirs"]["train"] == str(folder.data_dir / "train")
    assert os.environ.get("SM_CURRENT_HOST") is None  # nor sets anything


def test_a_group_left_with_only_zombies_has_ended() -> None:
    # The script's background child outlives it; orphaned, its zombie stays in the group for
    # as long as init does not reap it (never, on some containers' inits).
    script = ScriptProcess(
        "algo-1", ["sh", "-c", "sleep 0.2 & echo $!"], os.environ, subprocess.PIPE
    )
    out, _ = script.process.communicate(timeout=30)
    child = int(out)
    deadline = time.monotonic() + 30
    while not process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_gone(child)
    assert not script.group_alive()
    script.signal(signal.SIGKILL)  # a group known to be gone is left alone


@pytest.mark.parametrize("grace", [-1.0, float("nan")])
def test_a_negative_stop_grace_is_refused(tmp_path: Path, grace: float) -> None:
    job = TrainingJob(script(tmp_path, "pass\n"), [], output_path=tmp_path, stop_grace=grace)
    with pytest.raises(JobConfigError, match="stop grace must be at least 0 seconds"):
        job.run(live=False)
