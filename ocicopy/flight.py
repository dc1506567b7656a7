"""Per-key single flight: concurrent callers of the same key share one run; failures are evicted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """``await flight.run(key, fn)`` runs ``fn`` once per key; later callers get the first result.

    A run that fails is evicted, so a later call may try again; callers that were waiting on it see the error.
    """

    def __init__(self) -> None:
        self._slots: dict[Hashable, _Slot[T]] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(value, leader)``: ``leader`` is True for the caller whose ``fn`` ran."""
        slot = self._slots.get(key)
        if slot is not None:
            await slot.done.wait()
            if slot.error is not None:
                raise slot.error
            return slot.value, False  # type: ignore[return-value]
        slot = self._slots[key] = _Slot()
        try:
            slot.value = await fn()
        except BaseException as exc:
            slot.error = exc
            del self._slots[key]
            raise
        finally:
            slot.done.set()
        return slot.value, True

    def forget(self, key: Hashable) -> None:
        self._slots.pop(key, None)
