"""A deterministic merge of several ordered inputs, such as the partitions of Kafka topics.

Kafka orders messages within a partition only. A consumer reading the routing and the
feedback topics sees them interleaved by fetch timing, so two runs over the same logs
(or one run before and after a crash) would feed the monitor different orders, and
order decides what each evaluation sees. :class:`OrderedMerge` fixes the order: it
buffers each source's messages and releases the one with the smallest key only when
every source either has a message buffered or is known to have nothing more to give
(caught up with its log). Over logs written before they are read, the released order is
a function of the logs alone, like Kafka Streams' timestamp synchronisation.

>>> m = OrderedMerge[str]()
>>> m.push("feedback", (20, 2, 0, 0), "f0")
>>> m.push("routing", (10, 1, 0, 0), "r0")
>>> m.push("routing", (30, 1, 0, 1), "r1")
>>> m.release(["routing", "feedback"], caught_up=set())
['r0', 'f0']
>>> m.release(["routing", "feedback"], caught_up={"feedback"})
['r1']
>>> len(m)
0
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["OrderedMerge"]

T = TypeVar("T")
Key = tuple[Any, ...]


class OrderedMerge(Generic[T]):
    """Per-source FIFO buffers released in key order once no source can undercut them.

    Keys must increase within a source only loosely: a source's head is what competes,
    so a source whose keys go backwards is released in its own order (Kafka's offsets),
    which is what a partition's order means.
    """

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[tuple[Key, T]]] = {}
        self._size = 0

    def push(self, source: Hashable, key: Key, item: T) -> None:
        """Buffer ``item`` at the tail of ``source``'s queue."""
        self._queues.setdefault(source, deque()).append((key, item))
        self._size += 1

    def __len__(self) -> int:
        return self._size

    def buffered(self, source: Hashable) -> int:
        """Items buffered for one source."""
        q = self._queues.get(source)
        return len(q) if q else 0

    def release(self, sources: Iterable[Hashable],
                caught_up: Collection[Hashable] | Callable[[Hashable], bool],
                *, force: bool = False) -> list[T]:
        """Pop, in key order, every item no unread message could precede.

        ``sources`` are the inputs that can still deliver (the assigned partitions);
        an empty source blocks the merge unless ``caught_up`` says it has nothing more.
        Sources that are not listed (revoked partitions) never block. ``force``
        releases everything buffered, in key order, whatever is missing.
        """
        done = caught_up if callable(caught_up) else caught_up.__contains__
        gating = [s for s in sources if not done(s)]
        out: list[T] = []
        queues = self._queues
        while self._size:
            if not force and any(not queues.get(s) for s in gating):
                break
            source = min((s for s, q in queues.items() if q), key=lambda s: queues[s][0][0])
            out.append(queues[source].popleft()[1])
            self._size -= 1
        return out

    def release_tables_first(self, tables: Iterable[Hashable], streams: Iterable[Hashable],
                             caught_up: Collection[Hashable] | Callable[[Hashable], bool],
                             tables_read: bool) -> tuple[list[T], bool]:
        """The tables' items as they come; the streams' in key order once every table has
        been read to its end (``tables_read``, or ``caught_up`` for each table now).

        Returns the items and whether the tables have been read, for the next call.

        >>> m = OrderedMerge[str]()
        >>> m.push("baselines", (5, 0, 0, 0), "b0")
        >>> m.push("routing", (1, 1, 0, 0), "r0")
        >>> m.release_tables_first(["baselines"], ["routing"], set(), False)
        (['b0'], False)
        >>> m.release_tables_first(["baselines"], ["routing"], {"baselines", "routing"}, False)
        (['r0'], True)
        """
        done = caught_up if callable(caught_up) else caught_up.__contains__
        tables = list(tables)
        ready = [item for t in tables for item in self.take(t)]
        if not tables_read and not all(done(t) for t in tables):
            return ready, False
        return ready + self.release(streams, caught_up), True

    def clear(self) -> None:
        """Drop everything buffered."""
        self._queues.clear()
        self._size = 0

    def take(self, source: Hashable) -> list[T]:
        """Pop everything one source has buffered, in its own order."""
        q = self._queues.pop(source, None)
        if not q:
            return []
        self._size -= len(q)
        return [item for _, item in q]
