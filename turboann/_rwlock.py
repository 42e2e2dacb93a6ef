"""A readers-writer lock for the indexes: many searches at once, or one write.

Numba's kernels release the GIL, so a search in one thread really runs
while another thread adds or removes: without this a search could read a
store halfway through a change (ids of moved slots, kept vectors not yet
appended). Every public call of an index holds the lock for its whole
length: searches (and other readers) share it, adds, removes and training
take it alone.

A reader enters without a mutex: it puts its thread id in a set and then
looks for a writer; a writer announces itself and then waits for that set
to empty. Each side writes before it reads, and the GIL runs those
operations one at a time, so at least one of them sees the other: either
the reader yields or the writer waits (this needs the GIL: a free-threaded
interpreter would need a mutex here). Two plain mutex operations instead
cost a 1-query search 2.5-3 % (bench/lock_overhead.py; the lock's data is
cold after a scan); this costs about 1 %. Contended paths use a condition.

A waiting writer holds back readers that arrive after it, and readers
that waited through a write enter before the next writer, so neither a
stream of searches nor a loop of writes starves the other side.

A thread that already holds the lock may enter it again (a public method
calling another, or a subclass calling its base); a thread that reads may
not start writing (that could never be granted), which raises RuntimeError.
"""
from __future__ import annotations

import functools
import threading
from threading import get_ident


class RWLock:
    """Shared (read) or exclusive (write) access, reentrant per thread."""

    def __init__(self):
        self._readers: set[int] = set()   # ids of the threads reading now
        self._writer: int | None = None   # id of the thread that writes or waits to
        self._writers = threading.Lock()  # one writer at a time
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0                 # readers waiting for a writer
        self._readers_turn = False        # readers that waited through a write go before the next one

    def __reduce__(self):
        return RWLock, ()   # a pickled or copied index is another object: it gets a lock of its own, free

    def acquire_read(self) -> bool:
        """Enter as a reader; False (nothing to release) when this thread already holds the lock."""
        me = get_ident()
        if me in self._readers or self._writer == me:
            return False
        self._readers.add(me)
        if self._writer is not None:
            try:
                self._wait_for_writer(me)
            except BaseException:   # e.g. KeyboardInterrupt while waiting: leave nothing behind
                self._readers.discard(me)
                raise
        return True

    def release_read(self) -> None:
        self._readers.discard(get_ident())
        if self._writer is not None:   # it may be waiting for this reader
            with self._cond:
                self._cond.notify_all()

    def _wait_for_writer(self, me: int) -> None:
        """A reader that met a writer: step out of the readers until no writer is there.

        Under the condition's lock, as the writer's announcement is: no
        ordering argument needed here.
        """
        with self._cond:
            self._readers.discard(me)
            self._cond.notify_all()   # the writer may be waiting for this reader
            self._waiting += 1
            try:
                while self._writer is not None:
                    self._cond.wait()
            finally:   # also when interrupted: a stale count would keep the readers' turn for good
                self._waiting -= 1
                if not self._waiting and self._readers_turn:
                    self._readers_turn = False
                    self._cond.notify_all()
            self._readers.add(me)

    def acquire_write(self) -> bool:
        """Enter as the writer; False when this thread already writes. RuntimeError when it reads."""
        me = get_ident()
        if self._writer == me:
            return False
        if me in self._readers:
            raise RuntimeError("an index cannot be changed from inside one of its own searches "
                               "(this thread holds it for reading)")
        self._writers.acquire()
        try:
            with self._cond:
                while self._readers_turn:
                    self._cond.wait()
                self._writer = me
                while self._readers:
                    self._cond.wait()
        except BaseException:   # e.g. KeyboardInterrupt while waiting: readers must not wait for it
            self.release_write()
            raise
        return True

    def release_write(self) -> None:
        with self._cond:
            self._writer = None
            self._readers_turn = self._waiting > 0
            self._cond.notify_all()
        self._writers.release()


def reading(method):
    """Decorate a method of an object with a `_lock` RWLock: run it holding the lock shared.

    `acquire_read` and `release_read` written out: a 1-query search pays
    this on every call, and each Python call saved counts there.
    """
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        lock = self._lock
        me, readers = get_ident(), lock._readers
        if me in readers or lock._writer == me:
            return method(self, *args, **kwargs)
        readers.add(me)
        try:
            if lock._writer is not None:
                lock._wait_for_writer(me)
            return method(self, *args, **kwargs)
        finally:
            readers.discard(me)
            if lock._writer is not None:
                with lock._cond:
                    lock._cond.notify_all()
    return locked


def writing(method):
    """Decorate a method of an object with a `_lock` RWLock: run it holding the lock alone."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        lock = self._lock
        if not lock.acquire_write():
            return method(self, *args, **kwargs)
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release_write()
    return locked
