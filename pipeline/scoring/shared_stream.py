"""Streams whose production is timed: a method's stream in `compare` (`TimedStream`), and one
stream of items produced once and read by several consumers (`SharedStream`: the window
descriptors of the evaluation images, which three of `compare`'s methods score from), with each
consumer's time counted as if it had produced the items alone."""

from __future__ import annotations

import itertools
import time
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

    Readers hold no copy of their own: an item is kept until every reader has had it, so
    readers must go in step (as `compare_methods` takes them, one item each per round); a reader
    n items ahead of the slowest makes n items wait in memory.

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
        self._items, self._clock = iter(items), clock
        self.seconds = 0.0
        self._paid = dict.fromkeys(readers, 0.0)
        self._copies = dict(
            zip(readers, itertools.tee(self._produced(), len(readers)), strict=True)
        )

    def _produced(self) -> Iterator[T]:
        while True:
            started = self._clock()
            item = next(self._items, _END)
            self.seconds += self._clock() - started
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def reader(self, name: str) -> Iterator[T]:
        """Every item, in order, for the reader `name` (one of the `readers` given)."""
        copy = self._copies[name]
        while True:
            before = self.seconds
            item = next(copy, _END)
            self._paid[name] += self.seconds - before
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def counted(self, name: str, seconds: float) -> float:
        """The seconds reader `name` would have spent alone, from the `seconds` it measured
        over its whole stream (which include the production it happened to trigger); `seconds`
        unchanged for a name that is not a reader."""
        if name not in self._paid:
            return seconds
        return seconds - self._paid[name] + self.seconds
