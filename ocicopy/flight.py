"""Per-key single flight: concurrent callers of the same key share one run; failures are evicted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("abandoned", "done", "error", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: T | None = None
        self.error: BaseException | None = None
        self.abandoned = False  # the leader was cancelled: waiters start over (one becomes the leader)


class SingleFlight(Generic[T]):
    """``await flight.run(key, fn)``: concurrent callers of one key share a single run of ``fn``.

    With ``keep_results`` the value is also served to every later caller. A run that fails is evicted, so a
    later call may try again; callers that were waiting on it see the error. A cancelled leader hands over:
    its waiters start again and one of them runs ``fn``.
    """

    def __init__(self, keep_results: bool = False) -> None:
        self._slots: dict[Hashable, _Slot[T]] = {}
        self.keep_results = keep_results  # False: only runs in flight are shared; later callers run again

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(value, leader)``: ``leader`` is True for the caller whose ``fn`` ran."""
        while (slot := self._slots.get(key)) is not None:
            await slot.done.wait()
            if slot.abandoned:
                continue
            if slot.error is not None:
                raise slot.error
            return slot.value, False  # type: ignore[return-value]
        slot = self._slots[key] = _Slot()
        try:
            slot.value = await fn()
        except BaseException as exc:
            if self._slots.get(key) is slot:
                del self._slots[key]
            # A cancelled leader's cancellation belongs to the leader, not to the callers waiting on it.
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                slot.abandoned = True
            else:
                slot.error = exc
            raise
        finally:
            slot.done.set()
        if not self.keep_results and self._slots.get(key) is slot:
            del self._slots[key]
        return slot.value, True

    def has(self, key: Hashable) -> bool:
        """A run of ``key`` is in flight (or, with ``keep_results``, its value is kept)."""
        return key in self._slots

    def forget(self, key: Hashable) -> None:
        self._slots.pop(key, None)
