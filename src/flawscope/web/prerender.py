"""Draw the review page's pictures ahead of time, on one thread at the lowest CPU priority.

A part's first review page used to wait for its heat layer (the kept map read, coloured and encoded
as PNG) and, for large images, a display-size JPEG. Both are now drawn when the part enters the
review queue (the live feed and the flag routes hand its number over) and kept in memory, so the
reviewer's request is answered from the cache. The thread runs at nice 19 (Linux sets a thread's
own priority), so on the line PC it takes only CPU the line leaves idle; a part whose pictures
were not drawn yet is drawn at its first request, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)
WAITING = 512  # parts waiting to be drawn; older ones are dropped (they are drawn when opened)


class Prerenderer:
    """A queue of record numbers whose pictures one background thread draws.

    Args:
        draw: draws (and caches) the pictures of one record; returns how many it drew.
        nice: the thread's CPU priority (Linux ``nice`` value; ignored elsewhere).
    """

    def __init__(self, draw: Callable[[int], int], nice: int = 19) -> None:
        self.draw = draw
        self.nice = nice
        self.drawn = 0
        self.failed = 0
        self._waiting: deque[int] = deque(maxlen=WAITING)
        self._wake = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread: threading.Thread | None = None

    def want(self, seqs: Iterable[int]) -> None:
        """Draw these records' pictures soon (in order)."""
        with self._wake:
            self._waiting.extend(int(s) for s in seqs)
            self._wake.notify()

    def start(self) -> None:
        """Start the thread."""
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="web-prerender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (what is still waiting is dropped)."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def idle(self) -> bool:
        """True when nothing waits (tests and benchmarks wait for this)."""
        with self._wake:
            return not self._waiting and not self._busy

    def _run(self) -> None:
        # This thread only (on Linux a thread's id is a process id for setpriority).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        while True:
            with self._wake:
                while not self._waiting and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                seq = self._waiting.popleft()
                self._busy = True
            try:
                self.drawn += self.draw(seq)
            except Exception as exc:  # a bad file must not stop the thread; the page says why
                self.failed += 1
                logger.info("pictures of record %d not drawn ahead: %s", seq, exc)
            finally:
                with self._wake:
                    self._busy = False
