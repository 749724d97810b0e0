"""A host's training script and everything it starts, ended as one, as a container's end would.

Each host's script runs in a session of its own, so it and every process it forks (a data loader,
a shell, a child that outlives it) share one process group, which the runner signals as a whole.
A job is stopped as SageMaker's StopTrainingJob stops one: SIGTERM, then SIGKILL once the stop
grace has passed (SageMaker waits 120 s). A process that starts a session of its own leaves the
group and escapes; on SageMaker the container's end would take it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DEFAULT_STOP_GRACE", "ProcessGroups", "ScriptProcess", "returncode", "signal_name"]

# As SageMaker: a stopped job's algorithm gets 120 s between SIGTERM and SIGKILL.
DEFAULT_STOP_GRACE = 120.0
# After SIGKILL a process only lingers in an uninterruptible wait (a hung NFS read, say): the
# runner waits this long for it, then gives up rather than hang with it.
KILL_WAIT = 5.0

_PROC = Path("/proc")


def returncode(code: int) -> int:
    """A process killed by signal N exits, as a shell reports it, with 128 + N."""
    return 128 - code if code < 0 else code


class ScriptProcess:
    """One host's script, the leader of its own process group."""

    def __init__(
        self, host: str, command: Sequence[str], env: Mapping[str, str], stdio: int
    ) -> None:
        self.host = host
        # A session of its own: a Ctrl-C reaches the runner only, which forwards it.
        self.process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdio,
            stderr=stdio,
            start_new_session=True,
        )
        self.pgid = self.process.pid
        self._group_gone = False
        # When the script exited, to the moment: of several hosts that exit between two polls
        # (one crashes, its peers' collectives fail), the first is the job's cause.
        self.exited_at: float | None = None
        if hasattr(os, "waitid"):
            watcher = threading.Thread(target=self._watch_exit, name=f"pipemode-exit-{host}")
            watcher.daemon = True
            watcher.start()

    def _watch_exit(self) -> None:
        # WNOWAIT leaves the exit status to Popen, which reaps the process in poll().
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
        if self.exited_at is None:
            self.exited_at = time.monotonic()

    def poll(self) -> int | None:
        """The script's exit code (128 + N if killed by signal N), None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        if self.exited_at is None:  # the watcher has not woken yet, or there is none
            self.exited_at = time.monotonic()
        return returncode(code)

    def group_alive(self) -> bool:
        """True while the script or anything left in its group runs (zombies do not count)."""
        if self._group_gone:
            return False
        if self.process.poll() is None:
            return True
        self._group_gone = not _live_member(self.pgid)
        return not self._group_gone

    def signal(self, signum: int) -> None:
        """Signals the whole group; a group known to be gone is never signalled again, so a
        recycled process group id cannot be hit."""
        if not self.group_alive():
            return
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            self._group_gone = True
        except PermissionError:  # macOS, a group holding only zombies
            pass


class ProcessGroups:
    """The scripts of a job, stopped together: a signal to every group starts the stop grace,
    after which what is left gets SIGKILL. The signal handler calls in too, so every method
    may run between any two lines of another: each only sets a deadline or sends signals."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.scripts: list[ScriptProcess] = []
        self.kill_at: float | None = None
        self.killed_at: float | None = None

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to every group, once; SIGKILL follows after the grace (this one if given)."""
        if self.kill_at is None:
            self.forward(signal.SIGTERM, grace)

    def forward(self, signum: int, grace: float | None = None) -> None:
        """Sends `signum` (a Ctrl-C, say) to every group, starting the grace if not started."""
        if self.kill_at is None:
            self.kill_at = time.monotonic() + (self.grace if grace is None else grace)
        for script in self.scripts:
            script.signal(signum)

    def kill(self) -> None:
        if self.killed_at is None:
            self.killed_at = time.monotonic()
            for script in self.scripts:
                script.signal(signal.SIGKILL)

    def settle(self) -> bool:
        """Moves the stop on (SIGKILL once the grace is over; SIGTERM to what exited scripts
        left running, as their job has ended) and says whether nothing is left to wait for:
        every group has ended, or has resisted SIGKILL for KILL_WAIT seconds."""
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at:
            self.kill()
        if self.killed_at is not None and now >= self.killed_at + KILL_WAIT:
            return True
        if any(script.poll() is None for script in self.scripts):
            return False
        if not any(script.group_alive() for script in self.scripts):
            return True
        self.stop()
        return False


def _live_member(pgid: int) -> bool:
    """Whether a process other than a zombie is in the group. An orphan's zombie stays in its
    group until init reaps it, which some container inits never do: killpg(pgid, 0) alone would
    take it for alive. Where there is no /proc, killpg is all there is."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    with os.scandir(_PROC) as entries:
        for entry in entries:
            if entry.name.isdigit() and _in_group_and_running(entry.name, pgid):
                return True
    return False


def _in_group_and_running(pid: str, pgid: int) -> bool:
    try:
        stat = (_PROC / pid / "stat").read_text()
    except OSError:  # it ended while we looked
        return False
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split(" ", 3)[:3]
    return int(pgrp) == pgid and state != "Z"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
