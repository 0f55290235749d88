"""What an export is asked to do (ExportOptions) and the error for input it cannot use (ExportError)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# --dtype: what the weights are cast to. None keeps the checkpoint's own: what exports have always been written in.
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class ExportError(ValueError):
    """The options, the output folder or a record in the source cannot be exported; the message names the problem.
    A source that cannot be opened at all is nt_llm.trained's TrainedModelError."""


@dataclass
class ExportOptions:
    """What to export. `heads` keeps k of the H heads (renumbered 0..k-1, in the given order); `single_head`
    exports one head with the backbone as a plain LlamaForCausalLM. `max_position_embeddings` None means the
    training context (the recipe's data.seq_len), or the folder's own value when there is no recipe. `dtype` ("bf16",
    "fp32") casts the floating-point weights; None keeps the checkpoint's."""

    heads: tuple[int, ...] | None = None
    single_head: int | None = None
    dtype: str | None = None
    max_position_embeddings: int | None = None
    license: str = "apache-2.0"
    max_shard_size: str = "5GB"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.heads is not None:
            self.heads = tuple(self.heads)
            if not self.heads:
                raise ExportError("heads must name at least one head (e.g. --heads 0,2)")
            if any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in self.heads):
                raise ExportError(f"heads must be head indices >= 0, got {list(self.heads)}")
            if len(set(self.heads)) != len(self.heads):
                raise ExportError(f"heads lists a head twice: {list(self.heads)}")
        if self.single_head is not None:
            if self.heads is not None:
                raise ExportError("heads and single_head exclude each other: pick a subset or one head")
            if isinstance(self.single_head, bool) or not isinstance(self.single_head, int) or self.single_head < 0:
                raise ExportError(f"single_head must be a head index >= 0, got {self.single_head!r}")
        if self.max_position_embeddings is not None and (
            isinstance(self.max_position_embeddings, bool)
            or not isinstance(self.max_position_embeddings, int)
            or self.max_position_embeddings < 1
        ):
            raise ExportError(f"max_position_embeddings must be an integer >= 1, got {self.max_position_embeddings!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ExportError(f"dtype must be one of {sorted(DTYPES)} (or None: the checkpoint's), got {self.dtype!r}")
        if not self.license.strip():
            raise ExportError("license must be non-empty (a Hub license id such as apache-2.0)")
        if not str(self.max_shard_size).strip():
            raise ExportError("max_shard_size must be a size such as 5GB")
