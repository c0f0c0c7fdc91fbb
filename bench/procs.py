"""Child processes of the harness: spawned into log files, stopped on the way out, measured via /proc."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
PYTHON = sys.executable


def _die_with_parent() -> None:
    # Runs in the child: a harness killed with SIGKILL still takes its children along.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """A kB field of /proc/PID/status (VmHWM = peak RSS, VmRSS = current), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def tree_cpu_seconds(root_pid: int) -> float | None:
    """CPU seconds of a process and all its live descendants, with the children they have reaped.

    utime + stime + cutime + cstime of every live process in the tree: a PostgreSQL backend that
    has exited is counted in the postmaster's cutime, one still running in its own utime.
    """
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        # After the name: state, ppid, ...; utime, stime, cutime, cstime are fields 14-17 of the line (11-14 here).
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = sum(int(value) for value in fields[11:15]) / _TICKS_PER_S
    if root_pid not in cpu:
        return None
    total = 0.0
    for pid, seconds in cpu.items():
        node = pid
        while node not in (root_pid, 0, 1) and node in parents:
            node = parents[node]
        if node == root_pid:
            total += seconds
    return total


def _children_of(parent_pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None and int(fields[1]) == parent_pid:
            found.append(int(entry))
    return found


def machine_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (every process, all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy.
    ticks = [int(value) for value in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS_PER_S


def own_cpu_seconds() -> float:
    """This process plus its children that have exited (and were waited for)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    peak_rss_kib: int = 0
    # Peak RSS of each process this one started (a worker's preview process), by pid.
    descendant_peaks_kib: dict[int, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def peak_descendant_rss_kib(self) -> int:
        return max(self.descendant_peaks_kib.values(), default=0)

    def sample(self) -> None:
        peak = proc_status_kib(self.pid, "VmHWM")
        if peak is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, peak)
        for pid in _children_of(self.pid):
            peak = proc_status_kib(pid, "VmHWM")
            if peak is not None:
                self.descendant_peaks_kib[pid] = max(self.descendant_peaks_kib.get(pid, 0), peak)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        self.sample()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


@dataclass
class Children:
    """Every process the harness started; `stop_all` ends them in reverse order, by their own pid."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    async def spawn(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:  # noqa: ASYNC230 - opening a log file is instant
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                preexec_fn=_die_with_parent,
                # Own process group: a Ctrl-C reaches only the harness, which stops children in order.
                start_new_session=True,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        with open(self.log_dir / "children.txt", "a") as pids:  # noqa: ASYNC230 - for profilers (py-spy -p)
            pids.write(f"{name} {proc.pid}\n")
        return child

    async def stop(self, child: Child) -> int | None:
        code = await child.stop()
        if child in self.children:
            self.children.remove(child)
        return code

    async def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            await self.stop(child)


async def wait_for_log(child: Child, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in child.log_text():
        if child.proc.returncode is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name} did not log {needle!r} in {timeout_s} s:\n{child.tail()}")
        await asyncio.sleep(0.1)


async def sample_peaks(children: Sequence[Child], stop: asyncio.Event, every_s: float = 0.25) -> None:
    """VmHWM is already a high-water mark; sampling keeps it after a process has exited."""
    while not stop.is_set():
        for child in children:
            child.sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    for child in children:
        child.sample()
