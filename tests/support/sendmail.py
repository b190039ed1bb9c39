"""A private, real sendmail on a loopback port, for tests.

Everything an instance uses lives in its ``workdir``: the generated ``sendmail.mc``/``sendmail.cf``,
the maps, the queue, the delivered mail and sendmail's stdout/stderr (``sendmail.out``).  /etc is
never written: sendmail runs under ``unshare -m`` (this needs root) with private bind mounts of

* ``/etc/hosts``, ``/etc/nsswitch.conf`` (``hosts: files``) and ``/etc/resolv.conf`` (a refused
  nameserver), so that no name lookup can hang, the host name is qualified (no 60 s "unqualified
  host name" sleep at start-up) and 127.0.0.2 has no name;
* ``/dev``, replaced by a directory holding the few devices sendmail needs and ``/dev/log``, a
  datagram socket read by this module: that is how :meth:`Sendmail.log` has sendmail's syslog lines
  without a syslog daemon.

The daemon runs in the foreground (``-bD``) as the leader of its own process group; its SMTP
sessions stay in that group, so :meth:`Sendmail.stop` ends them all.  There is no queue runner
(no ``-q``), so every child of the daemon is an SMTP session, and a message whose delivery failed
stays in ``queue/``.

Mail for the local domain is stored by a small local mailer script, one file per message (written
to ``tmp/``, then renamed into ``new/``) under ``mail/<local part, lowercased by sendmail>/``.  The
file is what the mailer got on stdin: sendmail's added headers (Return-Path, Received, and Date,
From, Message-Id when missing), then the body exactly as the client sent it, CRLF line ends
included.  A mailertable catch-all routes every other domain to the reserved box
:data:`RELAY_BOX`, so a test can count what sendmail agreed to relay.

What this build (Debian 12, sendmail 8.17.1.9) answers, checked by tests/test_sendmail_harness.py:

* EHLO keywords: ENHANCEDSTATUSCODES, PIPELINING, EXPN, VERB, 8BITMIME, SIZE 1000000, DSN, ETRN,
  AUTH DIGEST-MD5 CRAM-MD5, DELIVERBY, HELP.  No SMTPUTF8: the binary is built without USE_EAI, and
  an ``O SmtpUTF8=True`` line makes sendmail refuse its configuration ("SmtpUTF8 set but no USE_EAI
  support").  No STARTTLS either (no certificates configured).
* A body containing a NUL byte: ``554 5.6.1 NUL byte not allowed`` (Debian sets RejectNUL).
* ``unknown@example.test`` at RCPT: ``550 5.1.1 <unknown@example.test>... User unknown``.
* Relaying from 127.0.0.2 with :data:`SAFE_ACCESS`:
  ``550 5.7.1 <x@elsewhere.invalid>... Relaying denied. IP name lookup failed [127.0.0.2]``.
* ``probe@relay-test.invalid`` from 127.0.0.1, with either map:
  ``250 2.1.5 <probe@relay-test.invalid>... Recipient ok``.  sendmail's Relay_ok ruleset trusts
  127.0.0.1 whatever the access map says, and the catch-all delivers the message to RELAY_BOX.
* Over ``confMAX_MESSAGE_SIZE``: ``MAIL FROM:<...> SIZE=2000000`` gets ``552 5.2.3 Message size
  exceeds fixed maximum message size (1000000)``; a DATA that turns out too big gets ``552 5.2.3
  Message exceeds maximum fixed size (1000000)``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CF_DIR = Path("/usr/share/sendmail/cf")
MAX_MESSAGE_SIZE = 1_000_000
# The box that receives everything the mailertable catch-all routes away from the local domain.
# Mail for a local user of this name would land there too, so tests must not use it.
RELAY_BOX = "relay-catchall"

# The map the proxy tests use.  It grants nothing: 127.0.0.2 (the proxy's source address) may not
# relay and has no GreetPause/ClientRate/ClientConn exemption.  (127.0.0.1 may still relay: the
# Relay_ok ruleset hard-codes it.)
SAFE_ACCESS: tuple[str, ...] = ()

# The non-comment lines of Debian 12's stock /etc/mail/access, copied so that tests never read
# /etc/mail (another machine may have edited it).  "Connect:127 RELAY" lets all of 127/8 relay.
DEBIAN_STOCK_ACCESS: tuple[str, ...] = (
    "Connect:127\tRELAY",
    "GreetPause:127\t0",
    "ClientRate:127\t0",
    "ClientConn:127\t0",
    "Connect:IPv6:::1\tRELAY",
    "GreetPause:IPv6:::1\t0",
    "ClientRate:IPv6:::1\t0",
    "ClientConn:IPv6:::1\t0",
    "GreetPause:\t5000",
    "ClientRate:\t10",
    "ClientConn:\t10",
    "Spam:postmaster@\tFRIEND",
    "Spam:abuse@\tFRIEND",
    "Spam:spam@\tFRIEND",
    "reject@\tREJECT",
    "Connect:169.254\tREJECT",
    "Connect:192.0.2\tREJECT",
    "Connect:224\tREJECT",
    "Connect:255\tREJECT",
)

# The devices sendmail may open; the private /dev hides all others.
_DEVICES = ("null", "zero", "full", "random", "urandom")

# Runs in the new mount namespace: $1 is the workdir, the remaining arguments are the command.
_NAMESPACE_SCRIPT = f"""\
set -e
w=$1; shift
for f in hosts nsswitch.conf resolv.conf; do mount --bind "$w/etc/$f" "/etc/$f"; done
for d in {" ".join(_DEVICES)}; do mount --bind "/dev/$d" "$w/dev/$d"; done
mount --rbind "$w/dev" /dev
exec "$@"
"""

# The local mailer: $1 is the local part, the message is on stdin.  Exit codes are sendmail's:
# 67 (EX_NOUSER) bounces a local part that is no plain file name, 75 (EX_TEMPFAIL) keeps the
# message queued after any other failure.  File names (nanoseconds since the epoch, then the PID)
# sort by arrival.
_DELIVER_SCRIPT = """\
#!/bin/sh
case $1 in ''|.*|*/*) exit 67 ;; esac
box={maildir}/$1
name=$(date +%s%N).$$
mkdir -p "$box/tmp" "$box/new" || exit 75
if cat >"$box/tmp/$name" && mv "$box/tmp/$name" "$box/new/$name"; then exit 0; fi
rm -f "$box/tmp/$name"
exit 75
"""

_NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files
networks: files
protocols: files
services: files
"""

# Any resolver call that slips past nsswitch is refused at once instead of timing out.
_RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"

_running: set[Sendmail] = set()


def sendmail_available() -> bool:
    """Are sendmail, m4, makemap, the cf macros and the namespace tools present?"""
    return not _missing_tools()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tool_paths() -> dict[str, str | None]:
    # /usr/libexec/sendmail first: on Debian /usr/sbin/sendmail is an alternatives link that may
    # point at another MTA's compatibility wrapper.
    search = os.pathsep.join(["/usr/libexec/sendmail", os.environ.get("PATH", ""), "/usr/sbin"])
    names = ("sendmail", "makemap", "m4", "unshare", "mount")
    return {name: shutil.which(name, path=search) for name in names}


def _missing_tools() -> list[str]:
    missing = [name for name, path in _tool_paths().items() if path is None]
    if not (CF_DIR / "m4" / "cf.m4").is_file():
        missing.append(f"{CF_DIR}/m4/cf.m4 (package sendmail-cf)")
    return missing


def _proc_stats() -> Iterator[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, state) of every process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # The command name (field 2) may hold spaces and parentheses; the rest follows the last ')'.
        state, parent, group = stat[stat.rindex(")") + 2 :].split()[:3]
        yield int(entry.name), int(parent), int(group), state


def _live_children(parent: int) -> list[int]:
    """Children of parent, not counting zombies it has yet to reap."""
    return [pid for pid, ppid, _, state in _proc_stats() if ppid == parent and state != "Z"]


def _group_alive(group: int) -> bool:
    # Zombies do not count: orphans are reaped by PID 1, which may take its time (1.5 s here).
    return any(pgrp == group and state != "Z" for _, _, pgrp, state in _proc_stats())


def _all_reaped(pids: list[int]) -> bool:
    """Have these processes exited and been reaped (not even zombies any more)?"""
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def _end_sessions(daemon: int, signum: int) -> int:
    """Signal the daemon's children and wait until the daemon has reaped them; return how many."""
    sessions = _live_children(daemon)
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    wait_until(lambda: _all_reaped(sessions), 5)
    return len(sessions)


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _delivered_files(box: Path) -> list[Path]:
    new = box / "new"
    return list(new.iterdir()) if new.is_dir() else []


class _SyslogReceiver:
    """Collects the datagrams that sendmail's syslog(3) sends to its private /dev/log."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._lines: list[str] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"syslog {path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            datagram = self._sock.recv(65536)
            if not datagram:
                if self._closing:  # woken by close()'s shutdown
                    return
                continue
            # "<22>Dec  4 16:31:44 sendmail[123]: ...": drop the "<priority>" prefix.
            text = datagram.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(text.split(">", 1)[1] if text.startswith("<") else text)

    def text(self) -> str:
        return "".join(line + "\n" for line in self._lines)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        # shutdown() wakes the blocked recv(); close() alone would not.
        self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)
        self._sock.close()


@dataclass(eq=False)
class Sendmail:
    """One private sendmail daemon on 127.0.0.1:port; see the module docstring."""

    workdir: Path
    port: int
    domain: str = "example.test"
    access: Sequence[str] = SAFE_ACCESS
    listen_backlog: int | None = 1024
    connection_rate_throttle: int | None = None
    # Inserted just before the MAILER() lines, so it may hold FEATURE() as well as define() lines.
    extra_mc: str = ""
    # False: extra_mc brings the DAEMON_OPTIONS line for 127.0.0.1:port (a snippet under test).
    mta_daemon: bool = True
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _syslog: _SyslogReceiver | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)

    @property
    def hostname(self) -> str:
        """sendmail's own name ($j): it names itself so in the greeting and in Received headers."""
        return f"mx.{self.domain}"

    def __enter__(self) -> Sendmail:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> None:
        """Build the configuration and maps, start the daemon and wait for its 220 greeting."""
        if self.is_running():
            raise RuntimeError(f"sendmail on port {self.port} is already running")
        missing = _missing_tools()
        if missing:
            raise RuntimeError(f"cannot run sendmail for tests, missing: {', '.join(missing)}")
        tools = _tool_paths()
        _running.add(self)
        try:
            self._write_files()
            self._syslog = _SyslogReceiver(self.workdir / "dev" / "log")
            self._run_checked("m4", [tools["m4"], "sendmail.mc"], stdout_name="sendmail.cf")
            for table in ("access", "virtusertable", "mailertable"):
                self._run_checked("makemap", [tools["makemap"], "hash", table], stdin_name=table)
            cf = str(self.workdir / "sendmail.cf")
            self._run_checked("sendmail -bi", self._namespaced(tools["sendmail"], "-C", cf, "-bi"))
            with (self.workdir / "sendmail.out").open("ab") as output:
                self._proc = subprocess.Popen(
                    self._namespaced(tools["sendmail"], "-C", cf, "-bD"),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a process group of its own, for stop()
                )
            self._wait_for_greeting(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the daemon with its sessions and deliveries, and wait for them; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            group = proc.pid
            # Sessions first, while the daemon is there to reap them: orphans would stay zombies
            # until PID 1 gets round to them.
            _end_sessions(group, signal.SIGTERM)
            _signal_group(group, signal.SIGTERM)
            # sendmail exits at once on SIGTERM, except while it sleeps between attempts to bind
            # a port that is in use.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            # Whatever ignored SIGTERM, or was orphaned by the daemon's exit, dies now.
            _signal_group(group, signal.SIGKILL)
            proc.wait(timeout=5)
            wait_until(lambda: not _group_alive(group), 5)
        if self._syslog is not None:
            self._syslog.close()  # log() still has the lines
        _running.discard(self)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def session_count(self) -> int:
        """How many child processes (SMTP sessions) the daemon has now."""
        return len(self._session_pids())

    def session_pids(self) -> list[int]:
        """The process ids of the SMTP sessions the daemon has now."""
        return self._session_pids()

    def signal_daemon(self, signum: int) -> None:
        """Signal the daemon only (SIGSTOP: it still accepts TCP in the kernel, but greets nobody)."""
        assert self._proc is not None
        os.kill(self._proc.pid, signum)

    def signal_sessions(self, signum: int) -> int:
        """Signal every SMTP session the daemon serves now; return how many."""
        sessions = self._session_pids()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return len(sessions)

    def kill_sessions(self) -> int:
        """SIGKILL every SMTP session the daemon serves now and return how many; the daemon stays."""
        return _end_sessions(self._proc.pid, signal.SIGKILL) if self.is_running() else 0

    def messages(self, user: str | None = None) -> list[bytes]:
        """Messages delivered to the local domain (or to one local part), oldest first."""
        maildir = self.workdir / "mail"
        if user is not None:
            # sendmail lowercases the local part it hands the local mailer.
            files = _delivered_files(maildir / user.lower())
        elif maildir.is_dir():
            boxes = [box for box in maildir.iterdir() if box.name != RELAY_BOX]
            files = [path for box in boxes for path in _delivered_files(box)]
        else:
            files = []
        return [path.read_bytes() for path in sorted(files, key=lambda path: path.name)]

    def relayed(self) -> list[bytes]:
        """Messages sendmail accepted for non-local domains, oldest first."""
        return self.messages(RELAY_BOX)

    def wait_for_messages(self, count: int, timeout: float = 10, user: str | None = None) -> list[bytes]:
        """Poll until at least count messages arrived for the domain (or user) and return them all."""
        found: list[bytes] = []

        def enough() -> bool:
            nonlocal found
            found = self.messages(user)
            return len(found) >= count

        if not wait_until(enough, timeout, interval=0.05):
            whose = f" for {user}@{self.domain}" if user else ""
            raise AssertionError(
                f"expected {count} message(s){whose} within {timeout} s, {len(found)} arrived"
            )
        return found

    def clear(self) -> None:
        """Delete every delivered message, local and relayed."""
        maildir = self.workdir / "mail"
        if maildir.is_dir():
            for box in maildir.iterdir():
                for path in _delivered_files(box):
                    path.unlink(missing_ok=True)

    def log(self) -> str:
        """sendmail's syslog lines since the last start() (still there after stop())."""
        return self._syslog.text() if self._syslog is not None else ""

    def session_command(self) -> list[str]:
        """``sendmail -bs -Am`` with this instance's configuration, in its private namespace: the
        command that serves one SMTP session on its standard input and output, as inetd runs it."""
        cf = str(self.workdir / "sendmail.cf")
        return self._namespaced(_tool_paths()["sendmail"], "-C", cf, "-bs", "-Am")

    def _session_pids(self) -> list[int]:
        return _live_children(self._proc.pid) if self.is_running() else []

    def _namespaced(self, *command: str) -> list[str]:
        return ["unshare", "-m", "--", "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(self.workdir), *command]

    def _run_checked(
        self, what: str, command: list[str], stdin_name: str | None = None, stdout_name: str | None = None
    ) -> None:
        """Run a build step in workdir; raise with its output if it fails."""
        with contextlib.ExitStack() as files:
            stdin = files.enter_context((self.workdir / stdin_name).open("rb")) if stdin_name else None
            stdout = files.enter_context((self.workdir / stdout_name).open("wb")) if stdout_name else None
            result = subprocess.run(
                command,
                cwd=self.workdir,
                stdin=stdin or subprocess.DEVNULL,
                stdout=stdout or subprocess.PIPE,
                stderr=subprocess.STDOUT if stdout is None else subprocess.PIPE,
                timeout=30,
            )
        output = (result.stdout or b"") + (result.stderr or b"")
        # m4 reports a FEATURE() after MAILER() with "*** ERROR" but still exits 0.
        if result.returncode != 0 or b"*** ERROR" in output:
            raise RuntimeError(
                self._failure(f"{what} failed with {result.returncode}", output.decode(errors="replace"))
            )

    def _wait_for_greeting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(self._failure(f"sendmail exited with {self._proc.returncode}"))
            try:
                with smtplib.SMTP(
                    "127.0.0.1", self.port, timeout=max(deadline - time.monotonic(), 1)
                ) as smtp:
                    smtp.quit()
                break
            except smtplib.SMTPConnectError as error:  # not a 220
                raise RuntimeError(self._failure(f"sendmail greeted with {error}")) from None
            except OSError:  # not listening yet (smtplib's errors are OSErrors too)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        self._failure(f"no greeting on port {self.port} within {timeout} s")
                    ) from None
                time.sleep(0.05)
        # Let the probe's session end, so that session_count() starts at 0.
        wait_until(lambda: self.session_count() == 0, 5)

    def _failure(self, reason: str, output: str = "") -> str:
        out_file = self.workdir / "sendmail.out"
        if out_file.exists():
            output += out_file.read_text(errors="replace")
        return f"{reason}\n--- output:\n{output}--- syslog:\n{self.log()}"

    def _write_files(self) -> None:
        work = self.workdir
        for directory in ("etc", "dev", "queue", "mail"):
            (work / directory).mkdir(parents=True, exist_ok=True)
        (work / "queue").chmod(0o700)
        for device in _DEVICES:
            (work / "dev" / device).touch()  # mount points for the real devices
        fd_link = work / "dev" / "fd"
        if not fd_link.is_symlink():
            fd_link.symlink_to("/proc/self/fd")

        # 127.0.0.2 is left out on purpose: the proxy's address must have no name.
        (work / "etc" / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.hostname} {socket.gethostname()}\n"
        )
        (work / "etc" / "nsswitch.conf").write_text(_NSSWITCH)
        (work / "etc" / "resolv.conf").write_text(_RESOLV_CONF)
        (work / "service.switch").write_text("hosts\tfiles\naliases\tfiles\n")

        (work / "local-host-names").write_text(f"{self.domain}\n{self.hostname}\n")
        (work / "relay-domains").write_text("")
        (work / "aliases").write_text("postmaster: root\nMAILER-DAEMON: postmaster\n")
        (work / "access").write_text("".join(line + "\n" for line in self.access))
        (work / "virtusertable").write_text(
            "".join(
                f"unknown@{host}\terror:5.1.1:550 User unknown\n" for host in (self.domain, self.hostname)
            )
        )
        (work / "mailertable").write_text(f".\tlocal:{RELAY_BOX}\n")
        deliver = work / "deliver.sh"
        deliver.write_text(_DELIVER_SCRIPT.format(maildir=shlex.quote(str(work / "mail"))))
        deliver.chmod(0o755)
        (work / "sendmail.mc").write_text(self._mc())

    def _mc(self) -> str:
        work = self.workdir
        listen = f", Listen={self.listen_backlog}" if self.listen_backlog is not None else ""
        daemon = (
            f"DAEMON_OPTIONS(`Family=inet, Name=MTA-test, Port={self.port}, Addr=127.0.0.1{listen}')dnl\n"
        )
        if not self.mta_daemon:
            daemon = ""
        throttle = (
            f"define(`confCONNECTION_RATE_THROTTLE', `{self.connection_rate_throttle}')dnl\n"
            if self.connection_rate_throttle is not None
            else ""
        )
        return f"""\
divert(-1)
Generated by tests/support/sendmail.py.
divert(0)dnl
include(`{CF_DIR}/m4/cf.m4')dnl
OSTYPE(`debian')dnl
dnl Every file in the workdir, none in /etc/mail or /var/lib/sendmail.
define(`QUEUE_DIR', `{work}/queue')dnl
define(`STATUS_FILE', `{work}/sendmail.st')dnl
define(`confPID_FILE', `{work}/sendmail.pid')dnl
define(`ALIAS_FILE', `{work}/aliases')dnl
define(`confCW_FILE', `{work}/local-host-names')dnl
define(`confCR_FILE', `-o {work}/relay-domains')dnl
define(`confSERVICE_SWITCH_FILE', `{work}/service.switch')dnl
define(`confDEAD_LETTER_DROP', `{work}/dead.letter')dnl
define(`HELP_FILE', `{work}/helpfile')dnl
undefine(`confHOST_STATUS_DIRECTORY')dnl
dnl pytest's temp dirs are under /tmp: world writable, but sticky.  Without this sendmail refuses
dnl every file there.
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
dnl A qualified name of our own: no "unqualified host name" 60 s sleep at start-up.
define(`confDOMAIN_NAME', `{self.hostname}')dnl
dnl Class w holds only the names given here, not the machine's interface addresses.
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0')dnl
dnl Deliver before answering DATA: a message is in its box once the client has its 250.
define(`confDELIVERY_MODE', `interactive')dnl
define(`confMAX_MESSAGE_SIZE', `{MAX_MESSAGE_SIZE}')dnl
dnl A busy test machine must not make sendmail queue mail or refuse connections.
define(`confQUEUE_LA', `1000')dnl
define(`confREFUSE_LA', `1000')dnl
{throttle}FEATURE(`no_default_msa')dnl
{daemon}FEATURE(`use_cw_file')dnl
FEATURE(`access_db', `hash -T<TMPF> {work}/access')dnl
FEATURE(`virtusertable', `hash -o {work}/virtusertable')dnl
FEATURE(`mailertable', `hash -o {work}/mailertable')dnl
dnl There is no DNS here.
FEATURE(`accept_unresolvable_domains')dnl
define(`LOCAL_MAILER_PATH', `{work}/deliver.sh')dnl
define(`LOCAL_MAILER_ARGS', `deliver.sh $u')dnl
dnl Lines end as on the wire, so that a stored body compares equal to what the client sent.
define(`LOCAL_MAILER_EOL', `\\r\\n')dnl
dnl -w: every local part is deliverable without a passwd entry.  -9: no 7-to-8 bit conversion;
dnl with it sendmail decodes quoted-printable bodies before handing them to the mailer.
MODIFY_MAILER_FLAGS(`LOCAL', `-w9')dnl
{self.extra_mc}
MAILER(`local')dnl
MAILER(`smtp')dnl
"""


@atexit.register
def _stop_all() -> None:
    """Safety net: a test run that forgot stop() must not leave daemons behind."""
    for instance in list(_running):
        instance.stop()
