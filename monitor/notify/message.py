"""What every channel renders: the alert as plain data, and the snippet around matched terms.

Channels differ only in how they escape and mark up; what to say is decided here once. The
snippet is a list of segments, each plain or highlighted, so each channel applies its own
escaping to feed text and its own markup to highlights.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.store import SourceState
from monitor.text import Term, locate

SNIPPET_CHARS = 320


@dataclass(frozen=True)
class RuleHit:
    id: str
    name: str
    terms: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    text: str
    highlight: bool = False


@dataclass(frozen=True)
class AlertMessage:
    title: str
    url: str | None
    source: str
    published_at: datetime | None
    rules: tuple[RuleHit, ...]
    snippet: tuple[Segment, ...]
    also: tuple[str, ...] = ()  # other outlets that reported the same story

    @property
    def headline(self) -> str:
        return self.title or "(untitled)"

    @property
    def link(self) -> str | None:
        """The item's link, only if it is a web link: feeds cannot make us link `javascript:`."""
        if self.url and self.url.lower().startswith(("http://", "https://")):
            return self.url
        return None

    @property
    def when(self) -> str:
        return self.published_at.strftime("%Y-%m-%d %H:%M UTC") if self.published_at else ""

    @property
    def also_line(self) -> str:
        """"Also reported by A, B and 3 more", or "" when no one else has."""
        if not self.also:
            return ""
        shown = list(self.also[:5])
        more = len(self.also) - len(shown)
        return "Also reported by " + ", ".join(shown) + (f" and {more} more" if more else "")

    @property
    def terms(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for rule in self.rules:
            seen.update(dict.fromkeys(rule.terms))
        return tuple(seen)


@dataclass(frozen=True)
class AlertGroup:
    """Several alerts in one message: a digest, or a burst grouped instead of a flood."""

    alerts: tuple[AlertMessage, ...]
    digest: str | None = None  # "hourly" or "daily"; None for a burst

    @property
    def title(self) -> str:
        count = f"{len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''}"
        if self.digest:
            return f"{self.digest.capitalize()} digest: {count}"
        return f"{count} at once"

    def by_rule(self) -> list[tuple[RuleHit, list[AlertMessage]]]:
        """The alerts under their first rule, rules in order of first appearance."""
        groups: dict[str, tuple[RuleHit, list[AlertMessage]]] = {}
        for alert in self.alerts:
            rule = alert.rules[0] if alert.rules else RuleHit("", "(no rule)", ())
            groups.setdefault(rule.id, (rule, []))[1].append(alert)
        return list(groups.values())

    @property
    def rule_names(self) -> str:
        return ", ".join(rule.name for rule, _ in self.by_rule())


def sample() -> AlertMessage:
    """The alert `monitor notify test` sends."""
    from datetime import UTC, datetime

    return AlertMessage(
        title="Test alert from monitor: COSCO expands Chancay port operations",
        url="https://example.org/monitor-test-alert", source="monitor (test)",
        published_at=datetime.now(UTC).replace(microsecond=0),
        rules=(RuleHit("notify-test", "Delivery test", ("COSCO", "Chancay")),),
        snippet=(Segment("This is a test message. "), Segment("COSCO", True),
                 Segment(" Shipping said operations at "), Segment("Chancay", True),
                 Segment(" would grow next year.")))


def snippet(texts: list[str], terms: list[str], width: int = SNIPPET_CHARS) -> tuple[Segment, ...]:
    """A window of about `width` characters from the first text where a term occurs, with
    every occurrence inside it highlighted; the start of the first text if none does."""
    parsed = [t for t in (Term.parse(term) for term in terms) if not t.empty]
    candidates = [t for t in texts if t]
    if not candidates:
        return ()
    for text in candidates:
        spans = locate(text, parsed)
        if spans:
            break
    else:
        text, spans = candidates[0], []
    start = 0
    if spans:
        first = spans[0][0]
        start = max(0, first - width // 3)
        if start:
            space = text.rfind(" ", 0, start + 1)
            start = space + 1 if space >= first - width // 2 and space != -1 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    segments: list[Segment] = []
    if start > 0:
        segments.append(Segment("…"))
    cursor = start
    for s, e in spans:
        if e <= start or s >= end:
            continue
        s, e = max(s, start), min(e, end)
        if s > cursor:
            segments.append(Segment(text[cursor:s]))
        segments.append(Segment(text[s:e], highlight=True))
        cursor = e
    if cursor < end:
        segments.append(Segment(text[cursor:end]))
    if end < len(text):
        segments.append(Segment("…"))
    return tuple(segments)


NOTICE_RULE = RuleHit("source-health", "Source health", ())
_NOTICE_TITLES = {
    "failing": "Source failing: {name}",
    "disabled": "Source disabled: {name}",
    "recovered": "Source recovered: {name}",
}


def source_notice(source: SourceState, kind: str, detail: str, now: datetime) -> AlertMessage:
    """An operator's message about a source, in the shape every channel renders (and escapes:
    a feed's name and its server's error text are untrusted)."""
    since = source.failing_since or now
    hours = (now - since).total_seconds() / 3600
    if kind == "failing":
        polls = source.consecutive_failures + 1
        text = f"Failing for {hours:.1f} h ({polls} poll{'s' if polls > 1 else ''}): {detail}"
    elif kind == "disabled":
        text = (f"The server says the feed is gone ({detail}); it is no longer polled. "
                f"`monitor sources enable {source.url}` polls it again.")
    else:
        text = f"Working again: {detail}."
    return AlertMessage(title=_NOTICE_TITLES[kind].format(name=source.label), url=source.url,
                        source="monitor", published_at=now, rules=(NOTICE_RULE,),
                        snippet=(Segment(text),))
