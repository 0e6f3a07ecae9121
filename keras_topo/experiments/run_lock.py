"""A run folder: checked before anything is written, then held by one process at a time.

`check_writable_folder(path, flag)` refuses a path that is a file, sits under a file, or cannot
be written. `lock_run_folder(folder)` takes an exclusive `flock` on `folder/.lock` for as long as
the `with` block runs and records its holder (process id, host, start time, command) in it; a
second process on the same folder gets `RunFolderBusy` naming that holder. The operating system
releases the lock when its holder exits, even when killed, so no stale lock outlives a run.
"""

import contextlib
import datetime
import json
import os
import socket
import sys

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there.
    fcntl = None

LOCK_FILE = ".lock"


class RunFolderBusy(ValueError):
    """Another process is training in this run folder."""


def check_writable_folder(path, flag="--out"):
    """Raises `ValueError` naming `flag` unless `path` is, or can be created as, a writable folder.

    Nothing is created: the first existing folder on the way to `path` must be writable.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file, not a folder; give a folder path.")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{flag} {path}: {existing} is a file, not a folder; give another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{flag} {path}: {existing} is not writable; give a folder you can write to."
        )


@contextlib.contextmanager
def lock_run_folder(folder):
    """Holds `folder`'s lock for the `with` block; raises `RunFolderBusy` if another holds it."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"{folder} is in use by {_holder(descriptor)}. Wait for that run to finish (or "
                "stop it, then run this command again to resume); another run needs another "
                "folder."
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_me()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _me():
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
    }


def _holder(descriptor):
    """The lock holder in words, from what it wrote in the lock file."""
    try:
        holder = json.loads(os.pread(descriptor, 65536, 0).decode())
        return (
            f"process {holder['pid']} on {holder['host']} (since {holder['since']}: "
            f"{holder['command']})"
        )
    except (ValueError, KeyError, TypeError):  # It has not written its details yet.
        return "another process"
