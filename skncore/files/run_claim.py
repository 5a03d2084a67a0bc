"""One run directory, one run at a time: a run claims its directory for as long as it lives.

The claim is RUN/.skn-claim (skn.files.rundir.CLAIM_FILE), locked with flock(2) by the run and holding its pid,
host and start time. A second run on the same directory finds it locked and is refused with one line that
names the holder. The kernel drops the lock when the holder ends however it ends (kill -9 included), so the
file a killed run leaves behind is a stale claim, taken over by the next run. Where the filesystem has no
flock, the recorded pid decides: a claim whose pid is not alive on this host is stale. The run removes the
file when it ends; `prepare_run_directory` and the viewers ignore it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from skn.errors import RunDirError
from skn.files.rundir import CLAIM_FILE, make_run_directory

_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


@dataclass(frozen=True)
class Holder:
    """Who claimed a run directory, as its claim file records it."""

    pid: int
    host: str
    started: str

    def alive(self) -> bool:
        """The holder still runs: on this host its pid exists; on another host it cannot be told, so yes."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True

    def text(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


@dataclass(frozen=True)
class RunClaim:
    """A run directory held by this process (the claim file's descriptor, locked)."""

    path: Path  # the claim file
    fd: int

    def release(self) -> None:
        """Remove the claim file (when it is still this claim's) and drop the lock."""
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a claim file left behind is taken over by the next run
        finally:
            os.close(self.fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _lock(fd: int) -> bool | None:
    """True: locked; False: another process holds the lock; None: no flock on this filesystem."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if err.errno in _NO_FLOCK:
            return None
        raise


def read_holder(path: Path) -> Holder | None:
    """The holder a claim file records (None while it is being written, or for a file that is not a claim)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        return Holder(int(record["pid"]), str(record["host"]), str(record["started"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _in_use(directory: Path, holder: Holder | None) -> RunDirError:
    who = holder.text() if holder is not None else "its pid is not written yet"
    return RunDirError(f"--out {directory}: in use by another run ({who}); wait for it to end, or choose another --out")


def claim_run_directory(directory: Path) -> RunClaim:
    """Create `directory` if need be and claim it for this process (see the module docstring); a directory
    claimed by a live run is a RunDirError naming it."""
    directory = make_run_directory(directory)
    path = directory / CLAIM_FILE
    for _ in range(100):  # only a holder that keeps releasing the file as we open it sends us round again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"--out {directory}: not writable ({err.strerror or err})") from None
        try:
            locked = _lock(fd)
            if locked is False:
                raise _in_use(directory, read_holder(path))
            if not _same_file(fd, path):  # its holder ended and removed it as we opened it: claim afresh
                os.close(fd)
                continue
            holder = read_holder(path)
            if locked is None and holder is not None and holder.pid != os.getpid() and holder.alive():
                raise _in_use(directory, holder)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
            return RunClaim(path, fd)
        except BaseException:
            os.close(fd)
            raise
    raise RunDirError(f"--out {directory}: could not claim it (its claim file keeps changing)")


@contextmanager
def hold(directory: Path) -> Iterator[Path]:
    """`directory`, claimed for the length of the block."""
    claim = claim_run_directory(directory)
    try:
        yield Path(directory)
    finally:
        claim.release()
