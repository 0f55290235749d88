"""What every command shares: the exit status for bad input and the one logging setup.

A command's output (report's and evaluate's tables, zero-shot's) goes to stdout and its log to stderr, so that
``nt-llm report RUN ... > table.md`` captures the table alone.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

PROG = "nt-llm"
# A path, option or value that cannot be used; the log names it. Other statuses are the commands' own.
EXIT_BAD_INPUT = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: Path | None = None, terminal_filter: logging.Filter | None = None) -> list[logging.Handler]:
    """INFO and above on stderr in LOG_FORMAT; returns the handlers added to the root logger.

    Without `log_file` nothing is added when the root logger already has handlers: a program (or a test) that calls
    a command's main in-process keeps its own logging. With `log_file` every record also goes to that file, and the
    terminal shows only what `terminal_filter` lets through.
    """
    root = logging.getLogger()
    if log_file is None and root.handlers:
        return []
    terminal = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [terminal]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        if terminal_filter is not None:
            terminal.addFilter(terminal_filter)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handlers
