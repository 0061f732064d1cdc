"""Draw the review page's pictures ahead of time, on one thread at the lowest CPU priority.

A part's first review page used to wait for its heat layer (the kept map read, coloured and encoded
as PNG) and, for large images, a display-size JPEG. Both are drawn ahead and kept in memory, so the
reviewer's request is answered from the cache: for the parts at the head of the review queue (the
next ones a reviewer will open; topped up whenever the live feed queues parts), for a part an
operator flags, and for the part after the one being reviewed. Parts queued behind the head wait:
drawing every queued part as it arrived cost the web app about a third of its CPU at full line
speed, for pictures that mostly fell out of the cache before anyone opened them. The thread runs at
nice 19 (Linux sets a thread's own priority), so on the line PC it takes only CPU the line leaves
idle; a part whose pictures were not drawn yet is drawn at its first request, as before.
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
DONE = 256  # record numbers remembered as drawn (the review pictures' cache holds 256 pictures)


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class Prerenderer:
    """A queue of record numbers whose pictures one background thread draws.

    Args:
        draw: draws (and caches) the pictures of one record; returns how many it drew.
        head: the record numbers at the head of the review queue (read on the thread by
            :meth:`top_up`); None: only what :meth:`want` is given is drawn.
        nice: the thread's CPU priority (Linux ``nice`` value; ignored elsewhere).
    """

    def __init__(
        self,
        draw: Callable[[int], int],
        head: Callable[[], Iterable[int]] | None = None,
        nice: int = 19,
    ) -> None:
        self.draw = draw
        self.head = head
        self.nice = nice
        self.drawn = 0
        self.failed = 0
        self._waiting: deque[int] = deque(maxlen=WAITING)
        self._wake = threading.Condition()
        self._stop = False
        self._busy = False
        self._top_up = False
        self._done: dict[int, None] = {}  # recently drawn, oldest first
        self._thread: threading.Thread | None = None

    def want(self, seqs: Iterable[int]) -> None:
        """Draw these records' pictures soon (in order)."""
        with self._wake:
            self._waiting.extend(int(s) for s in seqs)
            self._wake.notify()

    def top_up(self) -> None:
        """Draw the pictures of the queue's head soon (those not drawn yet); returns at once."""
        if self.head is None:
            return
        with self._wake:
            self._top_up = True
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
            return not self._waiting and not self._busy and not self._top_up

    def _run(self) -> None:
        # This thread only (on Linux a thread's id is a process id for setpriority).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(self.nice, _own_nice()))
        while True:
            with self._wake:
                while not self._waiting and not self._top_up and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                refill, self._top_up = self._top_up, False
                self._busy = True
            try:
                if refill:
                    self._refill()
                    continue
                with self._wake:
                    seq = self._waiting.popleft() if self._waiting else None
                if seq is not None:
                    self._draw(seq)
            finally:
                with self._wake:
                    self._busy = False

    def _refill(self) -> None:
        """Queue the head's parts not drawn recently, ahead of older wishes."""
        assert self.head is not None
        try:
            seqs = [int(s) for s in self.head() if int(s) not in self._done]
        except Exception as exc:  # the database may be away for a moment; the feed says so
            logger.info("review queue not read for drawing ahead: %s", exc)
            return
        with self._wake:
            self._waiting.extendleft(reversed(seqs))

    def _draw(self, seq: int) -> None:
        try:
            self.drawn += self.draw(seq)
        except Exception as exc:  # a bad file must not stop the thread; the page says why
            self.failed += 1
            logger.info("pictures of record %d not drawn ahead: %s", seq, exc)
            return
        self._done[seq] = None
        while len(self._done) > DONE:
            del self._done[next(iter(self._done))]
