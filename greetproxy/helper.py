"""The privileged hand-off helper: receives screened client sockets, runs sendmail on each.

Started as root by the proxy before it drops its privileges, with one end of a unix socket pair.
It never reads network data: each message brings one client socket (SCM_RIGHTS), which becomes
the standard input and output of a new ``GREETPROXY_SENDMAIL_COMMAND`` (``sendmail -bs -Am``, the
way inetd runs it; sendmail reads the client's address from the socket). It answers ``started``
or ``failed`` for each, and ``exited`` with the status when a child ends. It exits when the proxy
closes its end; children run on (they are their own sessions) until their client is done.

    python -m greetproxy.helper --fd N [--log-format json] [--log-level info] -- COMMAND...
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import logs

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

MESSAGE_SIZE = 256


def spawn(command: Sequence[str], client: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(command),
        stdin=client,
        stdout=client,
        close_fds=True,
        start_new_session=True,  # terminal signals meant for the proxy do not reach sessions
    )


def serve(channel: socket.socket, command: Sequence[str]) -> int:
    log = logs.get_logger(role="handoff_helper")
    children: dict[int, tuple[subprocess.Popen[bytes], str]] = {}
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)  # SIGCHLD wakes the selector
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for signum in (signal.SIGINT, signal.SIGTERM):  # the proxy decides; its end closing stops us
        signal.signal(signum, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    log.info("handoff_helper", state="ready", pid=os.getpid(), command=list(command))
    while True:
        for key, _ in selector.select():
            if key.fileobj is channel:
                message, fds, _, _ = socket.recv_fds(channel, MESSAGE_SIZE, 1)
                if not message:
                    log.info("handoff_helper", state="stopped", children=len(children))
                    return 0
                session = message.decode("ascii", "replace").partition(" ")[2]
                _start(channel, command, session, fds, children, log)
            else:
                while True:
                    try:
                        if not os.read(wake_read, 512):
                            break
                    except BlockingIOError:
                        break
                _reap(channel, children)


def _start(
    channel: socket.socket,
    command: Sequence[str],
    session: str,
    fds: list[int],
    children: dict[int, tuple[subprocess.Popen[bytes], str]],
    log: FilteringBoundLogger,
) -> None:
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        channel.send(f"failed {session} no client socket came with the message".encode())
        return
    try:
        child = spawn(command, fds[0])
    except OSError as error:
        log.error("handoff_spawn", session=session, error=str(error))
        channel.send(f"failed {session} {error.strerror or error}".encode())
        return
    finally:
        os.close(fds[0])
    children[child.pid] = (child, session)
    channel.send(f"started {session} {child.pid}".encode())


def _reap(channel: socket.socket, children: dict[int, tuple[subprocess.Popen[bytes], str]]) -> None:
    for pid, (child, session) in list(children.items()):
        status = child.poll()
        if status is not None:
            del children[pid]
            channel.send(f"exited {session} {status}".encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="greetproxy.helper")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    with socket.socket(fileno=args.fd) as channel:
        return serve(channel, args.command)


if __name__ == "__main__":
    sys.exit(main())
