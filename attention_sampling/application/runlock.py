"""One training process per run folder: an advisory lock on <run folder>/.lock.

Two train.py processes writing one folder would overwrite each other's checkpoints, and each would delete
the other's temporary files as leftovers of a killed run. The lock is flock(2) on an open file, so the
operating system drops it when its process ends in any way (even kill -9): a stale lock cannot outlive
its run, and nothing has to be cleaned up by hand. The file holds the owner's process id, for the message.

The lock guards writers only: in a folder where the lock file cannot even be created (read-only), no
process can write either, and the run's first write reports that with the state of its checkpoint. A
file system without flock (some network mounts) and a system without fcntl (Windows) leave the folder
unguarded rather than refuse to train.
"""
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

from .errors import AttentionSamplingError

LOCK_NAME = ".lock"


class RunLock:
    """Held from acquire() until release(), or until the process ends."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.file = None

    def acquire(self):
        """Take the lock, or raise AttentionSamplingError naming the folder and the process that holds it."""
        if self.file is not None:
            return self
        writable = True
        try:
            file = open(self.path, "a+")  # created if missing; never truncated before the lock is ours
        except OSError:
            writable = False
            try:
                file = open(self.path)  # flock needs no write access
            except OSError:
                return self  # no lock file and none can be made: nothing can be written here at all
        self.file = file
        if fcntl is not None:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                self.release()
                raise AttentionSamplingError(
                    f"{self.run_dir}: another training process (pid {holder}) is using this run folder; "
                    "wait for it to end or stop it, or choose another folder with --out") from None
            except OSError:
                return self  # flock unsupported here: unguarded, as documented above
        if writable:
            file.seek(0)
            file.truncate()
            file.write(f"{os.getpid()}\n")
            file.flush()
        return self

    def release(self):
        if self.file is not None:
            self.file.close()  # closing the file drops the flock
            self.file = None
