"""A weighted mix of document streams (`source: mix`), deterministic for a seed and resumable exactly.

Training draws each document from stream i with probability weight_i / sum(weights), as
`datasets.interleave_datasets(probabilities=...)` does, from an RNG seeded by the data seed and the rank; every
stream repeats on its own, so a small source is seen more often rather than running out. Validation takes documents
in a fixed weighted round robin instead (no RNG: the same documents for every seed), and goes on with the other
streams when one ends. The state is each stream's own position, the RNG and the counts drawn: resuming from it
continues with exactly the same documents.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .sources import Document, DocumentStream, StreamCounters


@dataclass
class MixCounters:
    """What the mix has read: the streams' counters summed, and the documents drawn from each."""

    total: StreamCounters
    drawn: dict[str, int]

    def as_dict(self) -> dict[str, int]:
        return {**self.total.as_dict(), **{f"documents_{name}": n for name, n in self.drawn.items()}}


class MixedStream:
    """Documents from several `DocumentStream`s by weight; iterates, `state_dict()`s and loads as one stream."""

    def __init__(
        self,
        parts: list[tuple[str, float, DocumentStream]],
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        sample: bool = True,
        name: str = "mix",
    ) -> None:
        if not parts:
            raise ValueError("a mix needs at least one stream")
        if any(not weight > 0 for _, weight, _ in parts):
            raise ValueError(f"{name}: mix weights must be > 0, got {[weight for _, weight, _ in parts]}")
        self.names = [part_name for part_name, _, _ in parts]
        self.weights = [float(weight) for _, weight, _ in parts]
        self.streams = [stream for _, _, stream in parts]
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.sample = sample
        self.name = name
        self._rng = random.Random(f"mix:{seed}:{rank}:{world_size}")
        self._drawn = [0] * len(parts)
        self._ended = [False] * len(parts)
        self._iters: list[Iterator[Document]] | None = None

    @property
    def counters(self) -> MixCounters:
        total = StreamCounters()
        for stream in self.streams:
            for key, value in stream.counters.as_dict().items():
                setattr(total, key, getattr(total, key) + value)
        return MixCounters(total, dict(zip(self.names, self._drawn, strict=True)))

    def __iter__(self) -> Iterator[Document]:
        if self._iters is None:
            self._iters = [iter(stream) for stream in self.streams]
        while True:
            i = self._pick()
            if i is None:
                return
            try:
                doc = next(self._iters[i])
            except StopIteration:  # a finite (validation) stream has ended: the others go on
                self._ended[i] = True
                continue
            self._drawn[i] += 1
            yield doc

    def _pick(self) -> int | None:
        live = [i for i in range(len(self.streams)) if not self._ended[i]]
        if not live:
            return None
        if self.sample:
            return self._rng.choices(live, weights=[self.weights[i] for i in live])[0]
        # Weighted round robin: the stream furthest behind its share goes next (ties: the first named).
        return min(live, key=lambda i: ((self._drawn[i] + 1) / self.weights[i], i))

    def _layout(self) -> list[Any]:
        return [self.names, self.weights, self.seed, self.rank, self.world_size, self.sample]

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "parts": [stream.state_dict() for stream in self.streams],
            "drawn": list(self._drawn),
            "ended": list(self._ended),
            "rng": [version, list(internal), gauss],
            "counters": self.counters.as_dict(),
            # Checked on load: a position means nothing in a mix of other streams or weights.
            "layout": self._layout(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "parts" not in state:
            raise ValueError(f"{self.name}: the data state was saved by a single source, not by a mix")
        if list(state["layout"]) != self._layout():
            raise ValueError(
                f"{self.name}: data state was saved for [sources, weights, seed, rank, world_size, sampled]="
                f"{list(state['layout'])} but this mix is {self._layout()}; exact resume needs the same mix"
            )
        for stream, part in zip(self.streams, state["parts"], strict=True):
            stream.load_state_dict(part)
        self._drawn = list(state["drawn"])
        self._ended = list(state["ended"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._iters = None  # the streams' generators hold their old positions: start new ones
