"""The engine's scheduling policy: who waits, who gets slots, whose prompt chunk runs next.

Pure bookkeeping over `Ticket`s, with no model and no threads, so it can be tested with fake requests:
- a bounded FIFO queue: a full queue refuses new work (`QueueFull`) instead of growing;
- admission in arrival order (no overtaking, so a wide beam request is never starved by narrow ones), each
  ticket into the lowest run of free contiguous slots wide enough for all its rows;
- one prefill run per engine iteration, between two decode steps: the next chunk of the oldest request still
  prefilling, with the next chunks of the prefilling requests in the slots right after it while the run stays
  within one chunk's worth of positions (a burst of short prompts prefills together), so prefilling delays the
  others' next tokens by about one chunk at most;
- decode steps over slots 0..high-water, the lowest placement keeping that mark low.
Chunk boundaries lie at fixed multiples of the chunk size from the start of each prompt (`chunk_bounds`), the
same whoever else runs, because a chunked prefill is not bit-identical to an unchunked one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .errors import MemgptError, UsageError


class QueueFull(MemgptError):
    """The engine's queue is full: the caller should retry later (HTTP 503 with Retry-After)."""


@dataclass(eq=False)
class Ticket:
    """The scheduler's view of one request: how many slots it needs and how much prompt it still has to prefill."""

    rows: int  # slots it holds while it runs (beams, or returned sequences)
    prompt_len: int  # positions of its prompt
    prefilled: int = 0  # positions of its prompt already in its slots (a reused prefix counts)
    start: int | None = None  # its first slot once placed
    payload: object = field(default=None, repr=False)  # the engine's own state of the request

    @property
    def placed(self) -> bool:
        return self.start is not None

    @property
    def prefilling(self) -> bool:
        return self.placed and self.prefilled < self.prompt_len


def _next_chunk(ticket: Ticket, chunk: int) -> int:
    begin, end = chunk_bounds(ticket.prefilled, ticket.prompt_len, chunk)
    return end - begin


def chunk_bounds(prefilled: int, prompt_len: int, chunk: int) -> tuple[int, int]:
    """The next chunk of a prompt, [begin, end): it ends at the next multiple of `chunk` or at the prompt's end."""
    end = min((prefilled // chunk + 1) * chunk, prompt_len)
    return prefilled, end


class Scheduler:
    def __init__(self, slots: int, max_queue: int):
        if slots < 1 or max_queue < 1:
            raise UsageError(
                f"an engine needs at least one slot and a queue of at least one, got {slots} and {max_queue}"
            )
        self.slots, self.max_queue = slots, max_queue
        self.waiting: deque[Ticket] = deque()
        self.running: list[Ticket] = []  # placed tickets, in admission order
        self._owner: list[Ticket | None] = [None] * slots

    def submit(self, ticket: Ticket) -> None:
        if ticket.rows > self.slots:
            raise UsageError(
                f"the request needs {ticket.rows} slots (one per beam or returned sequence), the engine has {self.slots}; "
                "lower num_beams / n or start the engine with more slots"
            )
        if self._waiting_for_slots(ticket) > self.max_queue:
            raise QueueFull(f"the engine's queue is full ({self.max_queue} requests waiting); retry later")
        self.waiting.append(ticket)

    def _waiting_for_slots(self, newcomer: Ticket) -> int:
        """Waiting tickets, with the newcomer last, that the next admission would not place: those that fit the free
        slots in order are placed at the next step and take no room in the queue."""
        free = self._owner.count(None)
        queue = [*self.waiting, newcomer]
        for placed, ticket in enumerate(queue):
            if ticket.rows > free:
                return len(queue) - placed
            free -= ticket.rows
        return 0

    def admit(self) -> list[Ticket]:
        """Place waiting tickets, in order, while the head finds room; return the ones placed."""
        placed = []
        while self.waiting:
            start = self._free_run(self.waiting[0].rows)
            if start is None:
                break
            ticket = self.waiting.popleft()
            ticket.start = start
            for slot in range(start, start + ticket.rows):
                self._owner[slot] = ticket
            self.running.append(ticket)
            placed.append(ticket)
        return placed

    def next_prefill(self) -> Ticket | None:
        """The oldest placed ticket with prompt left to prefill."""
        return next((t for t in self.running if t.prefilling), None)

    def prefill_group(self, chunk: int) -> list[Ticket]:
        """The oldest ticket still prefilling, then the prefilling tickets placed right after it, slot after slot,
        while (slots spanned) x (longest next chunk) stays within `chunk` positions: one run prefills them all.

        Only first chunks group: onnxruntime's GroupQueryAttention runs several positions over a past for one row
        at a time, so a later chunk (or one after a reused prefix) runs alone.
        """
        first = self.next_prefill()
        if first is None or first.prefilled > 0:
            return [first] if first is not None else []
        after = {t.start: t for t in self.running if t.prefilling and t.prefilled == 0}
        group, end = [first], first.start + first.rows
        longest = _next_chunk(first, chunk)
        while end in after:
            ticket = after[end]
            if (end + ticket.rows - first.start) * max(longest, _next_chunk(ticket, chunk)) > chunk:
                break
            group.append(ticket)
            longest = max(longest, _next_chunk(ticket, chunk))
            end += ticket.rows
        return group

    def decoding(self) -> list[Ticket]:
        """Placed tickets whose prompts are in: they take part in the next decode step."""
        return [t for t in self.running if not t.prefilling]

    def high_water(self) -> int:
        """One past the highest slot any decoding ticket holds (0 if none decodes)."""
        return max((t.start + t.rows for t in self.running if not t.prefilling), default=0)

    def remove(self, ticket: Ticket) -> None:
        """Forget a ticket, waiting or running; its slots become free."""
        if ticket in self.waiting:
            self.waiting.remove(ticket)
        if ticket in self.running:
            self.running.remove(ticket)
            for slot in range(ticket.start, ticket.start + ticket.rows):
                self._owner[slot] = None

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def _free_run(self, width: int) -> int | None:
        run = 0
        for slot, owner in enumerate(self._owner):
            run = run + 1 if owner is None else 0
            if run == width:
                return slot - width + 1
        return None
