"""A training job run locally as SageMaker runs it: job folder, config files, SM_* environment.

Each host (`algo-1` .. `algo-N`) gets a folder laid out like `/opt/ml`, its own feeders and its
own process running the entry point with the current Python. When the last process ends, the
feeders stop, the FIFOs go, and `model/` and `output/data` of the first host are packed under
`<output_path>/<job_name>/output/`, as SageMaker uploads them to S3.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TextIO

from pipemode.errors import JobConfigError
from pipemode.runner.channels import Channel, validate_name
from pipemode.runner.feeder import ChannelFeeder, ChannelStats
from pipemode.runner.progress import Progress, format_bytes, format_rate
from pipemode.runner.sources import DataObject, epoch_objects, read_chunks, relative_name, resolve

__all__ = ["HostFolder", "JobResult", "TrainingJob", "default_job_name"]

# How long a feeder or an output forwarder may take to notice the end of the job.
_SHUTDOWN_GRACE = 5.0
_FAILURE_TAIL_LINES = 40


def default_job_name(entry_point: str | os.PathLike[str]) -> str:
    """`<script>-<UTC timestamp>`, as the SageMaker SDK names jobs from a base name."""
    base = "".join(c if c.isalnum() else "-" for c in Path(entry_point).stem).strip("-")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H-%M-%S-%f")[:-3]
    return f"{base[:32] or 'job'}-{stamp}"


@dataclass(frozen=True)
class HostFolder:
    """One host's `/opt/ml`."""

    root: Path

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def config_dir(self) -> Path:
        return self.input_dir / "config"

    @property
    def data_dir(self) -> Path:
        return self.input_dir / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def create(self) -> None:
        for folder in (self.config_dir, self.model_dir, self.output_data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # The FIFOs live here: only the job's own user may open them.
        self.data_dir.mkdir(mode=0o700)
        self.data_dir.chmod(0o700)

    def remove_input_data(self) -> None:
        """Removes FIFOs left behind and File-mode copies: the job's inputs are transient."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)


@dataclass
class JobResult:
    job_name: str
    exit_code: int
    wall_seconds: float
    job_dir: Path
    hosts: list[HostFolder]
    model_data: Path
    output_data: Path
    failure: str | None
    channels: list[ChannelStats]

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        status = "completed" if self.succeeded else "failed"
        lines = [
            f"pipemode: job {self.job_name} {status} in {self.wall_seconds:.1f} s, "
            f"exit code {self.exit_code}"
        ]
        show_host = len(self.hosts) > 1
        for s in self.channels:
            name = f"{s.channel}@{s.host}" if show_host else s.channel
            lines.append(
                f"  channel {name}: {s.epochs_served} epoch(s) served, {format_bytes(s.bytes)}, "
                f"{format_rate(s.throughput)} while read"
                + (f", error: {s.error}" if s.error else "")
            )
        lines.append(f"  model: {self.model_data}")
        if self.failure:
            lines.append(f"  failure: {self.failure.splitlines()[0]}")
        return "\n".join(lines)


@dataclass
class TrainingJob:
    """What `pipemode train` and `Estimator.fit` run."""

    entry_point: Path
    channels: list[Channel]
    hyperparameters: dict[str, str] = field(default_factory=dict)
    script_args: list[str] = field(default_factory=list)
    output_path: Path = Path("pipemode-output")
    job_name: str | None = None
    instance_count: int = 1
    environment: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        live: bool | None = None,
    ) -> JobResult:
        """Runs the job to its end and returns what happened.

        The FIFOs and File-mode copies are always removed. The feeder and output threads are
        waited for at most `_SHUTDOWN_GRACE` seconds in all; any still running then (say, in
        a read from S3 that hangs) are daemon threads, left behind to end with the process.
        """
        stdout = stdout or sys.stdout
        stderr = stderr or sys.stderr
        started = time.monotonic()
        job_name, hosts, objects = self._prepare()
        run = _Run(self, job_name, hosts, objects, stdout, stderr)
        live = stderr.isatty() if live is None else live
        exit_code = run.execute(live)
        result = run.finish(exit_code, time.monotonic() - started)
        stderr.write(result.summary() + "\n")
        stderr.flush()
        return result

    def _prepare(self) -> tuple[str, list[str], dict[str, list[DataObject]]]:
        entry = Path(self.entry_point)
        if not entry.is_file():
            raise JobConfigError(f"entry point {str(entry)!r} is not a file")
        job_name = validate_name("job", self.job_name or default_job_name(entry))
        if self.instance_count < 1:
            raise JobConfigError(f"instance count must be at least 1, not {self.instance_count}")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise JobConfigError(f"channel names must be unique: {names}")
        for key in self.hyperparameters:
            if not key or any(c.isspace() for c in key) or key.startswith("-"):
                raise JobConfigError(f"invalid hyperparameter name {key!r}")
        if (Path(self.output_path) / job_name).exists():
            raise JobConfigError(
                f"{Path(self.output_path) / job_name} exists: job names are unique, pick another"
            )
        objects = {c.name: resolve(c) for c in self.channels}
        for channel in self.channels:
            if not channel.is_pipe:  # refused before the job's folders exist
                for obj in objects[channel.name]:
                    _file_mode_name(channel.name, obj)
        hosts = [f"algo-{i + 1}" for i in range(self.instance_count)]
        return job_name, hosts, objects


def _returncode(code: int) -> int:
    """A process killed by signal N exits, as a shell reports it, with 128 + N."""
    return 128 - code if code < 0 else code


class _Run:
    """The moving parts of one run: host folders, feeders, processes, output forwarding."""

    def __init__(
        self,
        job: TrainingJob,
        job_name: str,
        hosts: list[str],
        objects: dict[str, list[DataObject]],
        stdout: TextIO,
        stderr: TextIO,
    ) -> None:
        self.job = job
        self.job_name = job_name
        self.hosts = hosts
        self.objects = objects
        self.stdout = stdout
        self.stderr = stderr
        self.job_dir = Path(job.output_path).resolve() / job_name
        self.folders = [HostFolder(self.job_dir / host) for host in hosts]
        self.feeders: list[ChannelFeeder] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.forwarders: list[threading.Thread] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_FAILURE_TAIL_LINES)
        self.feeder_failed = threading.Event()
        self.signals: list[int] = []

    # -- setting up --------------------------------------------------------------------------

    def _write_config(self, folder: HostFolder, host: str) -> None:
        configs = {
            "hyperparameters.json": self.job.hyperparameters,
            "inputdataconfig.json": {c.name: c.container_config() for c in self.job.channels},
            "resourceconfig.json": {
                "current_host": host,
                "current_group_name": "homogeneousCluster",
                "hosts": self.hosts,
                "network_interface_name": "lo",
            },
        }
        for name, content in configs.items():
            (folder.config_dir / name).write_text(json.dumps(content, indent=2) + "\n")

    def _materialise(self, channel: Channel, folder: HostFolder, host_index: int) -> None:
        """Copies a File-mode channel's objects (this host's shard) under input/data/<channel>."""
        objects = epoch_objects(self.objects[channel.name], channel, 0, host_index, len(self.hosts))
        target = folder.data_dir / channel.name
        for obj in objects:
            path = _file_mode_path(target, channel.name, obj)
            path.parent.mkdir(parents=True, exist_ok=True)
            with obj.open() as source, open(path, "wb") as sink:
                for chunk in read_chunks(source):
                    sink.write(chunk)

    def environment(self, folder: HostFolder, host: str) -> dict[str, str]:
        """The SM_* variables the SageMaker training toolkit sets, for one host."""
        job = self.job
        channels = sorted(c.name for c in job.channels)
        input_config = {c.name: c.container_config() for c in job.channels}
        resource = json.loads((folder.config_dir / "resourceconfig.json").read_text())
        args = _script_args(job)
        training_env = {
            "channel_input_dirs": {c: str(folder.data_dir / c) for c in channels},
            "current_host": host,
            "hosts": self.hosts,
            "hyperparameters": job.hyperparameters,
            "input_config_dir": str(folder.config_dir),
            "input_data_config": input_config,
            "input_dir": str(folder.input_dir),
            "job_name": self.job_name,
            "model_dir": str(folder.model_dir),
            "network_interface_name": resource["network_interface_name"],
            "num_cpus": os.cpu_count() or 1,
            "num_gpus": 0,
            "output_data_dir": str(folder.output_data_dir),
            "output_dir": str(folder.output_dir),
            "resource_config": resource,
            "user_entry_point": Path(job.entry_point).name,
        }
        env = {
            "SAGEMAKER_BASE_DIR": str(folder.root),
            "TRAINING_JOB_NAME": self.job_name,
            "SM_CHANNELS": json.dumps(channels),
            "SM_INPUT_DATA_CONFIG": json.dumps(input_config),
            "SM_INPUT_DIR": str(folder.input_dir),
            "SM_INPUT_CONFIG_DIR": str(folder.config_dir),
            "SM_MODEL_DIR": str(folder.model_dir),
            "SM_OUTPUT_DIR": str(folder.output_dir),
            "SM_OUTPUT_DATA_DIR": str(folder.output_data_dir),
            "SM_HPS": json.dumps(job.hyperparameters),
            "SM_HOSTS": json.dumps(self.hosts),
            "SM_CURRENT_HOST": host,
            "SM_NETWORK_INTERFACE_NAME": resource["network_interface_name"],
            "SM_RESOURCE_CONFIG": json.dumps(resource),
            "SM_NUM_CPUS": str(training_env["num_cpus"]),
            "SM_NUM_GPUS": "0",
            "SM_USER_ENTRY_POINT": training_env["user_entry_point"],
            "SM_USER_ARGS": json.dumps(args),
            "SM_TRAINING_ENV": json.dumps(training_env),
        }
        for name in channels:
            env[f"SM_CHANNEL_{name.upper()}"] = str(folder.data_dir / name)
        for key, value in job.hyperparameters.items():
            env[f"SM_HP_{key.upper()}"] = value
        return env

    def _start_feeders(self, folder: HostFolder, host_index: int) -> None:
        for channel in self.job.channels:
            if not channel.is_pipe:
                continue
            feeder = ChannelFeeder(
                channel,
                self.objects[channel.name],
                folder.data_dir,
                self.hosts[host_index],
                host_index,
                len(self.hosts),
                on_error=self._feeder_error,
            )
            self.feeders.append(feeder)
            feeder.start()

    def _feeder_error(self, feeder: ChannelFeeder, error: BaseException) -> None:
        self.feeder_failed.set()

    def _start_worker(self, folder: HostFolder, host: str, progress: Progress) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so the script's output streams through
        env.update(self.environment(folder, host))
        env.update(self.job.environment)
        command = [
            sys.executable,
            str(Path(self.job.entry_point).resolve()),
            *_script_args(self.job),
        ]
        # A session of its own: a Ctrl-C reaches the runner only, which forwards it (see _wait).
        worker = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.workers.append(worker)
        prefix = f"{host}: " if len(self.hosts) > 1 else ""
        assert worker.stdout is not None and worker.stderr is not None
        for pipe, target, tail in (
            (worker.stdout, self.stdout, False),
            (worker.stderr, self.stderr, True),
        ):
            thread = threading.Thread(
                target=self._forward, args=(pipe, target, progress, prefix, tail), daemon=True
            )
            self.forwarders.append(thread)
            thread.start()

    def _forward(
        self, pipe: IO[bytes], target: TextIO, progress: Progress, prefix: str, tail: bool
    ) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace")
                if tail:
                    self.stderr_tail.append(prefix + line)
                progress.emit(target, prefix + line)

    # -- running ---------------------------------------------------------------------------

    def execute(self, live: bool) -> int:
        try:
            for index, (folder, host) in enumerate(zip(self.folders, self.hosts)):
                folder.create()
                self._write_config(folder, host)
                for channel in self.job.channels:
                    if not channel.is_pipe:
                        self._materialise(channel, folder, index)
                self._start_feeders(folder, index)
            stats = [feeder.stats for feeder in self.feeders]
            with Progress(stats, self.stderr, live) as progress, self._forwarding_signals():
                for folder, host in zip(self.folders, self.hosts):
                    if self.signals:
                        break  # interrupted while starting: start no more
                    self._start_worker(folder, host, progress)
                exit_code = self._wait()
                _join_all(self.forwarders, _SHUTDOWN_GRACE)
            return exit_code
        finally:
            self._stop_everything()

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signum)

    def _on_signal(self, signum: int, frame: object) -> None:
        # The first Ctrl-C (or SIGTERM) is passed on for the script to handle; a second kills.
        self.signals.append(signum)
        self._signal_workers(signum if len(self.signals) == 1 else signal.SIGKILL)

    @contextlib.contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        """From before the first worker starts: Ctrl-C and SIGTERM go to the workers."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _wait(self) -> int:
        """Waits for every worker; a failed worker or feeder stops the others."""
        first_failure = 0
        stopping = False
        while True:
            codes = [w.poll() for w in self.workers]
            failed = [_returncode(c) for c in codes if c not in (None, 0)]
            if failed and not first_failure:
                first_failure = failed[0]
            if None not in codes:
                break
            if not stopping and (failed or self.feeder_failed.is_set()):
                stopping = True
                self._signal_workers(signal.SIGTERM)
            time.sleep(0.05)
        if len(self.workers) < len(self.hosts):  # interrupted before every worker started
            return first_failure or 128 + self.signals[0]
        if self.feeder_failed.is_set() and not first_failure:
            return 1
        return first_failure

    def _stop_everything(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:  # only after an error in the runner itself
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        for feeder in self.feeders:
            feeder.stop()
        _join_all(self.feeders, _SHUTDOWN_GRACE)
        for folder in self.folders:
            folder.remove_input_data()

    # -- after the run -----------------------------------------------------------------------

    def failure_reason(self, exit_code: int) -> str | None:
        if exit_code == 0:
            return None
        feeder_errors = [
            f"channel {f.stats.channel} on {f.stats.host} failed: {f.stats.error}"
            for f in self.feeders
            if f.stats.error
        ]
        if feeder_errors:
            return "\n".join(feeder_errors)
        if self.signals:
            head = f"interrupted by {signal.Signals(self.signals[0]).name}"
        elif exit_code > 128:
            head = f"killed by {_signal_name(exit_code - 128)}"
        else:
            head = f"exited with code {exit_code}"
        script = Path(self.job.entry_point).name
        return f"AlgorithmError: {script} {head}\n" + "".join(self.stderr_tail)

    def finish(self, exit_code: int, wall_seconds: float) -> JobResult:
        failure = self.failure_reason(exit_code)
        if failure:
            for folder in self.folders:
                folder.failure_file.write_text(failure)
        artefacts = self.job_dir / "output"
        artefacts.mkdir(exist_ok=True)
        first = self.folders[0]
        model = _pack(first.model_dir, artefacts / "model.tar.gz")
        output = _pack(first.output_data_dir, artefacts / "output.tar.gz")
        return JobResult(
            job_name=self.job_name,
            exit_code=exit_code,
            wall_seconds=wall_seconds,
            job_dir=self.job_dir,
            hosts=self.folders,
            model_data=model,
            output_data=output,
            failure=failure,
            channels=[f.stats for f in self.feeders],
        )


def _file_mode_name(channel: str, obj: DataObject) -> PurePosixPath:
    """The object's path below its channel folder. The name comes from a manifest or an S3 key,
    which may be anything: one that is empty, absolute or goes up would be written elsewhere."""
    name = relative_name(obj)
    path = PurePosixPath(name)
    if not path.parts or path.is_absolute() or ".." in path.parts:
        raise JobConfigError(
            f"channel {channel!r}: object key {name!r} cannot be copied into the channel's "
            "folder: it is empty, absolute or has a '..' part"
        )
    return path


def _file_mode_path(target: Path, channel: str, obj: DataObject) -> Path:
    """Where a File-mode object is copied: under `target`, even if a symlink lies on the way."""
    path = target / _file_mode_name(channel, obj)
    if not path.resolve().is_relative_to(target.resolve()):
        raise JobConfigError(
            f"channel {channel!r}: object key {relative_name(obj)!r} resolves to {str(path)!r}, "
            f"outside the channel's folder {str(target)!r}"
        )
    return path


def _join_all(threads: Sequence[threading.Thread | ChannelFeeder], grace: float) -> None:
    """Joins each within one shared grace period: a stuck one (a network read) costs it once."""
    deadline = time.monotonic() + grace
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _script_args(job: TrainingJob) -> list[str]:
    """Hyperparameters as `--name value`, as SageMaker script mode passes them, then the rest."""
    args = []
    for key, value in job.hyperparameters.items():
        args += [f"--{key}", value]
    return args + list(job.script_args)


def _pack(folder: Path, archive: Path) -> Path:
    """Packs a folder's content (not the folder itself), as SageMaker packs model.tar.gz."""
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive
