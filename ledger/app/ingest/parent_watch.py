"""Helper processes that end with the process that started them.

A process started by `multiprocessing` (a phone-parsing pool's worker, and through it the
resource tracker) waits on a queue whose writing end it holds itself, so it never sees
its parent die: a SIGKILLed replay left both running for ever. Pure standard library, so
the pool can run it in each worker as its initializer.
"""

from __future__ import annotations

import os
import threading
import time

# How often a helper looks whether its parent is still there.
PARENT_CHECK_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Start a thread that ends this process once its parent is no longer `parent_pid`
    (on POSIX an orphan is re-parented, so the parent id changes when the parent dies)."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(1)  # nobody is left to read what this process would produce

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
