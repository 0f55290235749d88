"""The command-line tools keep DeepSpeed's CPU notice, and only it, off the terminal."""

import logging

import pytest

from nt_llm.console import hide_deepspeed_cpu_notice


def test_only_the_cpu_notice_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("DeepSpeed")
    before, propagate = list(logger.filters), logger.propagate
    try:
        hide_deepspeed_cpu_notice()
        hide_deepspeed_cpu_notice()  # idempotent: one filter
        assert len(logger.filters) == len(before) + 1
        with caplog.at_level(logging.INFO, logger="DeepSpeed"):
            logger.propagate = True  # DeepSpeed turns it off; on here so that caplog sees what passes
            logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, ...")
            logger.warning("zero stage 2 is not supported on this optimizer")
        assert "Setting accelerator" not in caplog.text and "zero stage 2" in caplog.text
    finally:
        logger.filters[:] = before
        logger.propagate = propagate
