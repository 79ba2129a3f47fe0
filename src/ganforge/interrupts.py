"""Ctrl-C, SIGTERM and SIGHUP as KeyboardInterrupt, held back while a module is being imported; output whose reader
has gone (a closed pipe, a terminal that hung up) sent nowhere."""

from __future__ import annotations

import os
import threading
from types import FrameType

RETRY_S = 0.05  # how soon a held-back interrupt is tried again


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: KeyboardInterrupt now or, inside an import, once the import is done. An interrupt
    raised inside an import can leave the module half-made, and torch's and numpy's imports were seen to go on
    with one: a Ctrl-C in a command's first second then crashed it later with a traceback (or let it train on)
    instead of stopping it."""
    if _importing(frame):
        timer = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
        timer.daemon = True  # a process that ends first is not held up by it
        timer.start()
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
