"""CPU priorities of the web app's threads: on a shared line PC the line comes first.

On Linux a thread's ``nice`` value is its own (``setpriority`` on its thread id) and the threads it
starts inherit it. Lowering is relative to the thread's current value, so the web app stays below
a line that was itself started under ``nice``. Elsewhere these calls do nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading

#: Steps below the serving threads for work nobody waits on (the live feed's reads of the log).
BACKGROUND_STEPS = 5


def lower_priority(steps: int) -> int:
    """Lower the calling thread's CPU priority by ``steps`` nice levels (at most to 19).

    Returns:
        The thread's nice value now (0 where the platform has none).
    """
    with contextlib.suppress(AttributeError, OSError):
        me = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, me)
        if steps > 0 and current < 19:
            os.setpriority(os.PRIO_PROCESS, me, min(19, current + steps))
        return os.getpriority(os.PRIO_PROCESS, me)
    return 0


def lowest_priority() -> None:
    """Run the calling thread at nice 19: only CPU nothing else wants."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
