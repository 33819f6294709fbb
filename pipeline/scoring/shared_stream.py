"""Streams whose production is timed: a method's stream in `compare` (`TimedStream`), and one
stream of items produced once and read by several consumers (`SharedStream`: the window
descriptors of the evaluation images, which three of `compare`'s methods score from), with each
consumer's time counted as if it had produced the items alone."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()  # what `next` returns past a stream's last item


class TimedStream(Generic[T]):
    """Iterate `items`, adding up the seconds spent producing them (not those spent using
    them) in `seconds` (`clock` seconds)."""

    def __init__(self, items: Iterable[T], clock: Callable[[], float] = time.perf_counter) -> None:
        self.items, self.clock, self.seconds = iter(items), clock, 0.0

    def __iter__(self) -> Iterator[T]:
        while True:
            started = self.clock()
            item = next(self.items, _END)
            self.seconds += self.clock() - started
            if item is _END:
                return
            yield item  # type: ignore[misc]


class SharedStream(Generic[T]):
    """The items of `items`, produced once and handed to each of the named readers in order.

    An item is held until every reader has had it, then dropped, so readers must go in step
    (as `compare_methods` takes them, one item each per round): a reader n items ahead of the
    slowest makes n items wait in memory. (`itertools.tee` would hold them in blocks of 57,
    for AlexNet-type windows 57 images of 58 MB each.)

    `seconds` adds up the time spent producing items (`clock` seconds); a reader pays for the
    items it was the first to ask for, and `counted` turns what a reader measured into what it
    would have spent alone: its own work plus every item's production.
    """

    def __init__(
        self,
        items: Iterable[T],
        readers: Sequence[str],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._produced = TimedStream(items, clock)
        self._source = iter(self._produced)
        self._held: deque[T] = deque()  # the items some reader has not had yet
        self._first = 0  # the number of the first held item
        self._next = dict.fromkeys(readers, 0)  # the number of each reader's next item
        self._paid = dict.fromkeys(readers, 0.0)

    @property
    def seconds(self) -> float:
        """The seconds spent producing the items so far."""
        return self._produced.seconds

    def reader(self, name: str) -> Iterator[T]:
        """Every item, in order, for the reader `name` (one of the `readers` given)."""
        while True:
            position = self._next[name]
            if position == self._first + len(self._held):
                before = self.seconds
                produced = next(self._source, _END)
                self._paid[name] += self.seconds - before
                if produced is _END:
                    return
                self._held.append(produced)  # type: ignore[arg-type]
            item = self._held[position - self._first]
            self._next[name] = position + 1
            while self._held and min(self._next.values()) > self._first:
                self._held.popleft()
                self._first += 1
            yield item

    def counted(self, name: str, seconds: float) -> float:
        """The seconds reader `name` would have spent alone, from the `seconds` it measured
        over its whole stream (which include the production it happened to trigger); `seconds`
        unchanged for a name that is not a reader."""
        if name not in self._paid:
            return seconds
        return seconds - self._paid[name] + self.seconds
