"""Ctrl-C, SIGTERM and SIGHUP as KeyboardInterrupt, held back while a module is being imported; output whose reader
has gone (a closed pipe, a terminal that hung up) sent nowhere."""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from types import FrameType
from typing import Any

RETRY_S = 0.05  # how soon a held-back interrupt is tried again


def importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def retry_signal(signum: int) -> None:
    """Sends `signum` to this process again shortly: a handler that must not act inside an import acts on
    the retry, once the import is done."""
    timer = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
    timer.daemon = True  # a process that ends first is not held up by it
    timer.start()


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: KeyboardInterrupt now or, inside an import, once the import is done. An interrupt
    raised inside an import can leave the module half-made, and torch's and numpy's imports were seen to go on
    with one: a Ctrl-C in a command's first second then crashed it later with a traceback (or let it train on)
    instead of stopping it."""
    if importing(frame):
        retry_signal(signum)
        return
    raise KeyboardInterrupt


def send_to_devnull(fd: int) -> None:
    """What is still written to file descriptor `fd` (and flushed at exit) goes nowhere: its reader, a pipe's
    or a terminal, is gone, and each write would fail again."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def silence_hung_up_terminal(error: OSError) -> bool:
    """A write to the terminal of a process that outlives it (`disown`, `setsid`, nohup: no SIGHUP) fails with
    EIO once that terminal is gone. Then stdout and stderr, where they were that terminal, go nowhere and the
    process goes on, as under nohup; True when that was the error."""
    if error.errno != errno.EIO:
        return False
    null = os.stat(os.devnull).st_rdev
    for fd in (sys.stdout.fileno(), sys.stderr.fileno()):
        mode = os.fstat(fd)
        if stat.S_ISCHR(mode.st_mode) and mode.st_rdev != null:  # a terminal, not a file or a pipe
            send_to_devnull(fd)
    return True


class HangUpProof:
    """A text stream (the CLI's stdout and stderr) whose writes to a terminal that has hung up go nowhere
    rather than stop the command with EIO part-way through its work, or at its last line with a wrong exit
    code."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as e:
            if not silence_hung_up_terminal(e):
                raise
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            if not silence_hung_up_terminal(e):
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
