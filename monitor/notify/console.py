"""The console: alerts printed to standard output, for a daemon with no channel set up yet.

Feed text is stripped of control characters so a feed cannot move the cursor, clear the
screen or recolour the terminal of whoever reads the log.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from monitor.notify.message import AlertGroup, AlertMessage

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _safe(text: str) -> str:
    return _CONTROL.sub("", text)


def render(alert: AlertMessage) -> str:
    lines = [f"ALERT {_safe(alert.headline)}"]
    meta = _safe(alert.source) + (f" · {alert.when}" if alert.when else "")
    lines.append(f"  {meta}")
    if alert.link:
        lines.append(f"  {_safe(alert.link)}")
    for rule in alert.rules:
        terms = ", ".join(_safe(t) for t in rule.terms)
        lines.append(f"  matched {_safe(rule.name)} [{rule.id}]" + (f": {terms}" if terms else ""))
    if alert.also:
        lines.append("  " + _safe(alert.also_line))
    if alert.snippet:
        text = "".join(f"**{s.text}**" if s.highlight else s.text for s in alert.snippet)
        lines.append("  " + _safe(text.replace("\n", " ")))
    return "\n".join(lines) + "\n"


def render_group(group: AlertGroup) -> str:
    lines = [f"ALERTS {group.title}"]
    for rule, alerts in group.by_rule():
        lines.append(f"  {_safe(rule.name)} [{rule.id}]")
        for alert in alerts:
            lines.append(f"    - {_safe(alert.headline)} ({_safe(alert.source)})"
                         + (f" {_safe(alert.link)}" if alert.link else ""))
    return "\n".join(lines) + "\n"


class ConsoleNotifier:
    name = "console"
    group_limit = 500

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream

    async def send(self, alert: AlertMessage, *, reply_to: str | None = None) -> None:
        self._write(render(alert))

    async def send_group(self, group: AlertGroup) -> None:
        self._write(render_group(group))

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()

    async def aclose(self) -> None:
        return None
