"""A training job run locally as SageMaker runs it: job folder, config files, SM_* environment.

Each host (`algo-1` .. `algo-N`) gets a folder laid out like `/opt/ml`, its own feeders and its
own process group running the entry point with the current Python. When the last script ends
(and whatever it left running has been ended), the feeders stop, the FIFOs go, and `model/` and
`output/data` of the first host are packed under `<output_path>/<job_name>/output/`, as SageMaker
uploads them to S3, with a failed job's reason in `output/failure` beside them.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import os
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
from pipemode.runner.distribution import Distribution, HostAddresses
from pipemode.runner.feeder import ChannelFeeder, ChannelStats
from pipemode.runner.host import HostFolder, host_config, script_args
from pipemode.runner.processes import (
    DEFAULT_STOP_GRACE,
    KILL_WAIT,
    ProcessGroups,
    ScriptProcess,
    signal_name,
)
from pipemode.runner.progress import Progress, format_bytes, format_rate
from pipemode.runner.sources import DataObject, epoch_objects, read_chunks, relative_name, resolve

__all__ = [
    "DEFAULT_OUTPUT_PATH",
    "JobResult",
    "TrainingJob",
    "default_job_name",
]

# Where jobs go unless told otherwise, relative to the current folder.
DEFAULT_OUTPUT_PATH = Path("pipemode-output")
# How long a feeder or an output forwarder may take to notice the end of the job.
_SHUTDOWN_GRACE = 5.0
_FAILURE_TAIL_LINES = 40
# The most the other hosts get between SIGTERM and SIGKILL when one host has failed: they are
# stuck in collectives that cannot complete, and TensorFlow's MultiWorkerMirroredStrategy
# catches SIGTERM (as a preemption notice) and carries on.
PEER_FAILURE_GRACE = 10.0
# How often the job looks at its scripts and feeders. Scripts that exit within one look are
# ordered by when their exit watchers woke (ScriptProcess.exited_at), not by host order.
POLL_INTERVAL = 0.05


def default_job_name(entry_point: str | os.PathLike[str]) -> str:
    """`<script>-<UTC timestamp>`, as the SageMaker SDK names jobs from a base name."""
    base = "".join(c if c.isalnum() else "-" for c in Path(entry_point).stem).strip("-")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H-%M-%S-%f")[:-3]
    return f"{base[:32] or 'job'}-{stamp}"


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
    # `<job>/output/failure`, beside model.tar.gz, when the job failed.
    failure_file: Path | None = None

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
        if self.succeeded:
            lines.append(f"  model: {self.model_data}")
        else:
            lines.append(f"  failure: {self.failure_file}")
            lines.append(f"  reason: {(self.failure or '').splitlines()[0]}")
        return "\n".join(lines)


@dataclass
class TrainingJob:
    """What `pipemode train` and `Estimator.fit` run."""

    entry_point: Path
    channels: list[Channel]
    hyperparameters: dict[str, str] = field(default_factory=dict)
    script_args: list[str] = field(default_factory=list)
    output_path: Path = DEFAULT_OUTPUT_PATH
    job_name: str | None = None
    instance_count: int = 1
    environment: dict[str, str] = field(default_factory=dict)
    # Seconds between the SIGTERM that stops a job (a failure, Ctrl-C) and SIGKILL.
    stop_grace: float = DEFAULT_STOP_GRACE
    # SageMaker's distributed training set up on every host, as the framework container does.
    distribution: Distribution | None = None

    def run(
        self,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        live: bool | None = None,
    ) -> JobResult:
        """Runs the job to its end and returns what happened.

        The FIFOs and File-mode copies are always removed, and every process the scripts
        started has ended. The feeder and output threads are then waited for at most
        `_SHUTDOWN_GRACE` seconds in all; one still running then (a feeder in a read from S3
        that hangs, a forwarder whose pipe a process that left its group still holds) is a
        daemon thread, left behind to end with the process.
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
        if not self.stop_grace >= 0:  # NaN too
            raise JobConfigError(f"stop grace must be at least 0 seconds, not {self.stop_grace}")
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


@dataclass(frozen=True)
class _Cause:
    """The first thing that went wrong in a run: what the failure reason names."""

    reason: str
    exit_code: int
    # Whose stderr tail follows the reason; None for a channel, whose own error says it all.
    host: str | None = None
    signum: int | None = None


class _Run:
    """The moving parts of one run: host folders, feeders, scripts, output forwarding.

    The first failure (a channel that cannot be served, a script that exits non-zero, a Ctrl-C
    or SIGTERM to the runner) is the job's cause and stops it: every host's process group gets
    SIGTERM (or the signal received), then SIGKILL once the stop grace has passed. When every
    script has exited, whatever they left running is ended the same way, then the feeders and
    output threads are joined: a job leaves nothing behind.
    """

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
        self.addresses = HostAddresses.pick(hosts) if job.distribution else None
        self.feeders: list[ChannelFeeder] = []
        self.groups = ProcessGroups(job.stop_grace)
        self.scripts = self.groups.scripts  # the same list: a script started is one stopped
        self.forwarders: list[threading.Thread] = []
        self.tails = {h: collections.deque[str](maxlen=_FAILURE_TAIL_LINES) for h in hosts}
        self.failed_feeders: list[ChannelFeeder] = []  # appended to by the feeder threads
        self.signals: list[int] = []  # appended to by the signal handler
        self.exit_codes: dict[str, int] = {}
        self.cause: _Cause | None = None
        self.first_failed_code = 0

    # -- setting up --------------------------------------------------------------------------

    def _set_up_host(self, index: int, folder: HostFolder, host: str) -> dict[str, str]:
        """Makes the host's folder, config files and inputs; returns its script's SM_* vars."""
        folder.create()
        config = host_config(self.job, self.job_name, self.hosts, host, folder)
        for name, content in config.files.items():
            (folder.config_dir / name).write_text(json.dumps(content, indent=2) + "\n")
        for channel in self.job.channels:
            if not channel.is_pipe:
                self._materialise(channel, folder, index)
        self._start_feeders(folder, index)
        if self.job.distribution and self.addresses:
            distribution = self.job.distribution.host_environment(self.hosts, host, self.addresses)
            return {**config.environment, **distribution}
        return config.environment

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
                on_error=lambda feeder, error: self.failed_feeders.append(feeder),
            )
            self.feeders.append(feeder)
            feeder.start()

    def _start_script(self, host: str, sm_env: dict[str, str], progress: Progress) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so the script's output streams through
        env.update(sm_env)
        env.update(self.job.environment)
        command = [sys.executable, str(Path(self.job.entry_point).resolve())]
        script = ScriptProcess(host, command + script_args(self.job), env, subprocess.PIPE)
        self.scripts.append(script)
        prefix = f"{host}: " if len(self.hosts) > 1 else ""
        process = script.process
        assert process.stdout is not None and process.stderr is not None
        for pipe, target, tail, name in (
            (process.stdout, self.stdout, None, "stdout"),
            (process.stderr, self.stderr, self.tails[host], "stderr"),
        ):
            thread = threading.Thread(
                target=_forward,
                args=(pipe, target, progress, prefix, tail),
                name=f"pipemode-{name}-{host}",
                daemon=True,  # only left running if a process escaped its group with the pipe
            )
            self.forwarders.append(thread)
            thread.start()

    def _announce_distribution(self) -> None:
        """Says where the hosts listen: loopback ports, not the algo-N:port of SageMaker."""
        if self.job.distribution and self.addresses:
            where = self.job.distribution.describe(self.hosts, self.addresses)
            self.stderr.write(f"pipemode: {where}\n")

    # -- running ---------------------------------------------------------------------------

    def execute(self, live: bool) -> int:
        try:
            environments = [
                self._set_up_host(index, folder, host)
                for index, (folder, host) in enumerate(zip(self.folders, self.hosts))
            ]
            stats = [feeder.stats for feeder in self.feeders]
            self._announce_distribution()
            with Progress(stats, self.stderr, live) as progress, self._forwarding_signals():
                for host, sm_env in zip(self.hosts, environments):
                    if self.signals:
                        break  # interrupted while starting: start no more
                    self._start_script(host, sm_env, progress)
                self._wait()
                for feeder in self.feeders:
                    feeder.stop()
                _join_all([*self.forwarders, *self.feeders], _SHUTDOWN_GRACE)
            return self._exit_code()
        finally:
            self._stop_everything()

    def _wait(self) -> None:
        """Until every script and all it started have ended (or resisted SIGKILL too long)."""
        while True:
            self._note_failures()
            if self.cause is not None:
                self.groups.stop(self._stop_grace(self.cause))
            if self.groups.settle():
                # A script may have ended between the two calls above (settle() sees it gone):
                # its exit code must still be noted, or a script killed after the grace would
                # count as one that exited 0.
                self._note_failures()
                return
            time.sleep(POLL_INTERVAL)

    def _note_failures(self) -> None:
        """Records the first failure as the cause, and the scripts' exits as they come."""
        if self.signals:
            signum = self.signals[0]
            name = f"{Path(self.job.entry_point).name} interrupted by {signal_name(signum)}"
            self._note(_Cause(f"AlgorithmError: {name}", 128 + signum, signum=signum))
        for feeder in self.failed_feeders:
            stats = feeder.stats
            self._note(_Cause(f"channel {stats.channel} on {stats.host} failed: {stats.error}", 1))
        # The first to exit is the cause: once one host fails, its peers' collectives fail too.
        for script in sorted(self.scripts, key=lambda s: s.exited_at or float("inf")):
            code = script.poll()
            if code is None or script.host in self.exit_codes:
                continue
            self.exit_codes[script.host] = code
            if code != 0:
                self.first_failed_code = self.first_failed_code or code
                self._note(_Cause(self._script_failure(script.host, code), code, script.host))

    def _stop_grace(self, cause: _Cause) -> float:
        if cause.host is not None and len(self.hosts) > 1:
            return min(self.job.stop_grace, PEER_FAILURE_GRACE)
        return self.job.stop_grace

    def _note(self, cause: _Cause) -> None:
        if self.cause is None:
            self.cause = cause

    def _script_failure(self, host: str, code: int) -> str:
        script = Path(self.job.entry_point).name
        where = f" on {host}" if len(self.hosts) > 1 else ""
        how = f"killed by {signal_name(code - 128)}" if code > 128 else f"exited with code {code}"
        return f"AlgorithmError: {script}{where} {how}"

    def _on_signal(self, signum: int, frame: object) -> None:
        # The first Ctrl-C (or SIGTERM) stops the job as a failure would, but passes the signal
        # itself on, for the script to handle (a KeyboardInterrupt); a second one kills.
        self.signals.append(signum)
        if len(self.signals) > 1:
            self.groups.kill()
        else:
            self.groups.forward(signum)

    @contextlib.contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        """From before the first script starts: Ctrl-C and SIGTERM stop the job."""
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

    def _exit_code(self) -> int:
        cause = self.cause
        if cause is None:
            return 0
        if cause.signum is None:
            return cause.exit_code
        # Stopped from outside: the scripts say whether they failed (a script may catch Ctrl-C,
        # save its model and exit 0); one never started has not succeeded.
        if self.first_failed_code:
            return self.first_failed_code
        return cause.exit_code if len(self.scripts) < len(self.hosts) else 0

    def _stop_everything(self) -> None:
        for script in self.scripts:
            script.signal(signal.SIGKILL)  # a no-op unless the runner itself failed
            with contextlib.suppress(subprocess.TimeoutExpired):
                script.process.wait(KILL_WAIT)
        for feeder in self.feeders:
            feeder.stop()
        _join_all(self.feeders, _SHUTDOWN_GRACE)
        for folder in self.folders:
            folder.remove_input_data()

    # -- after the run -----------------------------------------------------------------------

    def failure_reason(self, exit_code: int) -> str | None:
        if exit_code == 0 or self.cause is None:
            return None
        cause = self.cause
        if cause.host is None and cause.signum is None:
            return cause.reason
        host = cause.host or next((h for h in self.hosts if self.exit_codes.get(h)), self.hosts[0])
        own = self.folders[self.hosts.index(host)].failure_file
        # A script may write its own reason, as SageMaker asks algorithms to: it comes first.
        written = own.read_text(errors="replace").strip() if own.is_file() else ""
        return "\n".join(filter(None, [cause.reason, written])) + "\n" + "".join(self.tails[host])

    def finish(self, exit_code: int, wall_seconds: float) -> JobResult:
        failure = self.failure_reason(exit_code)
        artefacts = self.job_dir / "output"
        artefacts.mkdir(exist_ok=True)
        failure_file = None
        if failure:
            for folder in self.folders:
                if not folder.failure_file.exists():
                    folder.failure_file.write_text(failure)
            # Where a SageMaker user looks: beside model.tar.gz, as DescribeTrainingJob's reason.
            failure_file = artefacts / "failure"
            failure_file.write_text(failure)
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
            failure_file=failure_file,
            channels=[f.stats for f in self.feeders],
        )


def _forward(
    pipe: IO[bytes],
    target: TextIO,
    progress: Progress,
    prefix: str,
    tail: collections.deque[str] | None,
) -> None:
    """Copies a script's stdout or stderr line by line, keeping stderr's tail for the failure."""
    with pipe:
        for raw in iter(pipe.readline, b""):
            line = prefix + raw.decode(errors="replace")
            if tail is not None:
                tail.append(line)
            progress.emit(target, line)


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


def _pack(folder: Path, archive: Path) -> Path:
    """Packs a folder's content (not the folder itself), as SageMaker packs model.tar.gz."""
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive
