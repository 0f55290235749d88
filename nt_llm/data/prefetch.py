"""Background prefetching of training batches that keeps exact resume.

On a GPU a training step of a small model takes about as long as tokenizing its batch in the same
thread; a producer thread hides that. The tokenizer's Rust code releases the GIL, and a GPU-bound
loop spends most of its time waiting on the device, so one thread is enough.

The producer records the pipeline state right after each batch it makes, and the consumer keeps the
state that belongs to the last batch it *received*: `state_dict()` is then the position of the
training loop, not of the producer running ahead of it.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from typing import Any

from .pipeline import Batch, TrainBatches, batch_stats

_END = object()


class PrefetchedBatches:
    """`TrainBatches` produced `depth` batches ahead in a thread; same batches, same state_dict."""

    def __init__(self, batches: TrainBatches, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        # A transformers tokenizer call rewrites the backend's truncation/padding settings, so the main
        # thread encoding anything meanwhile (an eval, a sample) would race with the producer: own a copy.
        batches.rows.tokenizer = copy.deepcopy(batches.rows.tokenizer)
        self.batches = batches
        self.depth = depth
        self._state = batches.state_dict()
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[Batch]:
        if self._thread is None:
            self._start()
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                self._thread = None  # it has ended; the pipeline stays where the error left it
                raise item
            batch, self._state = item
            yield batch

    def _start(self) -> None:
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._produce, args=(self._queue,), name="nt_llm-data-prefetch", daemon=True
        )
        self._thread.start()

    def _produce(self, out: queue.Queue[Any]) -> None:
        try:
            for batch in self.batches:
                if not self._put(out, (batch, self.batches.state_dict())):
                    return
            self._put(out, _END)
        except BaseException as err:  # handed to the consumer, which re-raises it in the training loop
            self._put(out, err)

    def _put(self, out: queue.Queue[Any], item: Any) -> bool:
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stop the producer; the batches it made ahead are dropped and the pipeline is rewound to the
        last batch received, so iterating again continues exactly there."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.batches.load_state_dict(self._state)

    def stats(self) -> dict[str, float]:
        """As `TrainBatches.stats()`, at the last batch received."""
        s = self._state
        return batch_stats(s["batches"], s["real_tokens"], s["total_tokens"], s["rows"]["docs"]["counters"])

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.batches.load_state_dict(state)
        self._state = self.batches.state_dict()
