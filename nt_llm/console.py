"""What the command-line tools show on the terminal, beside their own messages."""

from __future__ import annotations

import logging

CPU_NOTICE = "Setting accelerator to CPU"


class _DropCpuNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return CPU_NOTICE not in record.getMessage()


def hide_deepspeed_cpu_notice() -> None:
    """DeepSpeed warns "Setting accelerator to CPU ..." on stdout whenever it is imported without a GPU (the
    expected case on a CPU, not news to the user). A filter on its logger outlives the handler DeepSpeed adds
    when it is imported later; every other DeepSpeed message still shows."""
    logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropCpuNotice) for f in logger.filters):
        logger.addFilter(_DropCpuNotice())
