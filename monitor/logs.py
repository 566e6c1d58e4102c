"""Logging: fixed messages with fields (`feed fetched url=… status=304 new=0 ms=41`).

structlog renders key=value lines for people (`console`) or JSON lines for collectors (`json`),
to standard error; alerts printed by the console notifier go to standard output.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO", fmt: str = "console") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


    # Libraries log through the standard library. httpx would log every request URL at INFO,
    # and a Slack webhook URL is a secret; APScheduler's "skipped: still running" is noise.
    for name, floor in (("httpx", logging.WARNING), ("httpcore", logging.WARNING),
                        ("apscheduler", logging.ERROR)):
        logging.getLogger(name).setLevel(floor)


log = structlog.get_logger("monitor")
