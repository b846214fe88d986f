"""What the admin side needs from the rest of the broker: health sources, the store's writer,
the outbox, the mappings in force. The application passes these in; admin never sees it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from broker.mapping.specs import MappingSet
    from broker.outbound.outbox import Destination, RequestDestination

T = TypeVar("T")
Row = dict[str, Any]
#: one listener or worker: {"name", "up", "address", "detail"}
HealthSource = Callable[[], Row]


class Writes(Protocol):
    """The store's single writer: runs a job in a transaction of its own."""

    async def run(self, work: Callable[[Any], T]) -> T: ...


class OutboxControl(Protocol):
    """The outbox worker: its destinations by name, and a nudge to deliver now."""

    @property
    def destinations(self) -> Mapping[str, Destination | RequestDestination]: ...

    def wake(self) -> None: ...


class MappingSource(Protocol):
    """The mappings in force, how the last reload went, and a reload."""

    @property
    def directory(self) -> Path: ...

    @property
    def last_reload_at(self) -> float | None: ...

    @property
    def last_reload_ok(self) -> bool | None: ...

    @property
    def last_errors(self) -> list[str]: ...

    def __call__(self) -> MappingSet: ...

    def reload(self, trigger: str = ...) -> bool: ...


class MllpStatus(Protocol):
    @property
    def serving(self) -> bool: ...

    @property
    def host(self) -> str: ...

    @property
    def bound_port(self) -> int: ...

    @property
    def active_connections(self) -> int: ...

    @property
    def refused(self) -> int: ...


class DicomStatus(Protocol):
    @property
    def serving(self) -> bool: ...

    @property
    def ae_title(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def bound_port(self) -> int: ...

    @property
    def active_associations(self) -> int: ...

    @property
    def queries(self) -> int: ...


class OutboxStatus(Protocol):
    @property
    def running(self) -> bool: ...

    @property
    def destinations(self) -> Mapping[str, Destination | RequestDestination]: ...

    @property
    def delivered(self) -> int: ...

    @property
    def dead(self) -> int: ...

    @property
    def retried(self) -> int: ...


class WriterStatus(Protocol):
    @property
    def alive(self) -> bool: ...

    @property
    def description(self) -> str:
        """Where the data lives (a file, a database URL without its password)."""
        ...

    def status(self) -> dict[str, Any]: ...


class MembershipStatus(Protocol):
    """This broker's heartbeats in the database."""

    @property
    def node(self) -> str: ...

    @property
    def reachable(self) -> bool: ...

    @property
    def beats(self) -> int: ...

    def last_reached_ago(self) -> float | None: ...


class UpstreamStatus(Protocol):
    """An upstream worklist's poller: reachable at its last poll, and what it mirrors."""

    name: str
    up: bool
    items: int
    polls: int
    failures: int
    last_success: float | None
    last_error: str
    #: polls skipped because another broker sharing the database holds the upstream
    polled_elsewhere: int

    @property
    def address(self) -> str: ...

    @property
    def polling(self) -> bool: ...
