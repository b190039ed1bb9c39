"""What the bench reads from /proc and the machine: CPU time and memory of a process, open
descriptors, available memory, the number of tasks, and a description of the machine."""

from __future__ import annotations

import os
import platform
import re
import resource
import select
import subprocess
from importlib import metadata
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of one process, in kB."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    fields = {name: int(value) for name, value in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def meminfo_kb(name: str) -> int:
    text = Path("/proc/meminfo").read_text()
    match = re.search(rf"^{name}:\s+(\d+) kB", text, re.M)
    if match is None:
        raise RuntimeError(f"/proc/meminfo has no {name}")
    return int(match.group(1))


def listen_overflows() -> int:
    """Connections the kernel dropped, machine-wide, because a listener's accept queue was full
    (TcpExt ListenOverflows): each costs its client a SYN retransmission, 1 s or more."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def listen_backlog(port: int) -> int | None:
    """The backlog of the TCP socket listening on 127.0.0.1:port (``ss``'s Send-Q column)."""
    try:
        result = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    fields = result.stdout.split()
    return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None


def tasks() -> int:
    """Processes and threads on the machine now (the fourth field of /proc/loadavg)."""
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])


def pid_max() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def raise_file_limit() -> tuple[int, int]:
    """The soft open-file limit up to the hard one; returns (soft, hard) in force. The hard limit
    itself needs CAP_SYS_RESOURCE to go higher: one more try, quietly."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def sendmail_version(timeout: float = 5) -> str:
    """sendmail's version from the first line ``-d0.1`` prints; it may then sleep over an
    unqualified host name, so it is not waited for."""
    try:
        process = subprocess.Popen(
            ["/usr/libexec/sendmail/sendmail", "-d0.1", "-bt"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return "unknown"
    assert process.stdout is not None
    try:
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        first = process.stdout.readline().decode(errors="replace") if readable else ""
    finally:
        process.kill()
        process.wait()
    match = re.search(r"Version (\S+)", first)
    return match.group(1) if match else "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "memory_gb": round(meminfo_kb("MemTotal") / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "aiosmtpd": _version("aiosmtpd"),
        "sendmail": sendmail_version(),
        "open_file_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def _os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.system()
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?$', text, re.M)
    return match.group(1) if match else platform.system()
