"""The command line: one function per command. Errors become messages here, and only here.

    monitor run [--once]     the daemon, or one poll of every source and one delivery pass
    monitor rules check      validate the rules directory
    monitor rules test       what would match, and why (JSON Lines, a live feed, a backtest)
    monitor rules schema     the JSON Schema of rule files
    monitor stories          recent stories, with every outlet that reported each
    monitor sources          every source's health and schedule; `enable URL` after a 410
    monitor alerts           the outbox by state; `show ID` with its attempts; `retry`
    monitor notify test D    send a sample alert to destination D now
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from monitor import __version__
from monitor.errors import ConfigError, MonitorError, RulesError
from monitor.logs import configure, log
from monitor.settings import Settings, load_settings


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure(settings.log_level, settings.log_format)
    return settings


def _report(exc: RulesError, closing: str) -> None:
    """Every problem with its line and a caret, then one closing line."""
    for problem in exc.problems:
        click.echo(problem.pointed(), err=True)
    click.echo(closing.format(count=len(exc.problems)), err=True)


def _load_rules(settings: Settings) -> Any:
    """The rules directory, or every problem in it and exit 1."""
    from monitor.rules import load_rules

    try:
        return load_rules(settings.rules_dir,
                          destinations=settings.configured_destinations())
    except RulesError as exc:
        _report(exc, "{count} problem(s) found")
        sys.exit(1)


rules_dir_option = click.option(
    "--rules-dir", type=click.Path(path_type=Path, file_okay=False),
    help="Rules directory (default: MONITOR_RULES_DIR, else ./rules).")


@click.group()
@click.version_option(__version__, prog_name="monitor")
def cli() -> None:
    """monitor: news alerts from feeds, matched by rules, sent once per story."""


@cli.command()
@click.option("--once", is_flag=True,
              help="Poll every source once, deliver what is due, then exit.")
@rules_dir_option
def run(once: bool, rules_dir: Path | None) -> None:
    """Run the daemon (until SIGTERM or SIGINT), or a single pass with --once."""
    from monitor.app import App

    settings = _settings(rules_dir=rules_dir)
    app = App(settings)
    try:
        if once:
            asyncio.run(app.run_once())
        else:
            asyncio.run(app.run_forever())
    except RulesError as exc:
        _report(exc, "monitor: {count} problem(s) in the rules; not starting")
        sys.exit(2)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        log.exception("fatal error")
        raise click.ClickException(f"fatal: {type(exc).__name__}: {exc}") from None


@cli.group()
def rules() -> None:
    """Work with the rules directory."""


@rules.command("check")
@rules_dir_option
def rules_check(rules_dir: Path | None) -> None:
    """Validate feeds, entities and rules; print every problem as file:line:column: reason."""
    settings = _settings(rules_dir=rules_dir)
    ruleset = _load_rules(settings)
    click.echo(f"{settings.rules_dir}: OK — {len(ruleset.feeds)} feeds, "
               f"{len(ruleset.entities)} entities, {len(ruleset.rules)} rules")


@cli.command()
@click.option("--since", default="72h", show_default=True,
              help="How far back to look (30m, 24h, 7d, …).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="The most stories to show.")
def stories(since: str, limit: int) -> None:
    """Recent stories, newest first: each with its copies from every source, and where its
    alerts stand."""
    from monitor.durations import parse_duration

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    with _store() as store:
        found = store.recent_stories(store.clock() - window, limit)
    if not found:
        click.echo(f"no stories in the last {since}")
    for story in found:
        states = " ".join(f"{d}:{s}" for d, s in sorted(story.alerts.items())) or "no alert"
        if not story.copies:
            continue
        first, *copies = story.copies
        click.echo(f"story {story.id} · {story.created_at:%Y-%m-%d %H:%M} UTC · {states}")
        click.echo(f"  {first.title}")
        click.echo(f"  {first.source} · {first.url or '(no link)'}")
        if copies:
            click.echo(f"  also reported by {len(copies)}:")
        for copy in copies:
            click.echo(f"    {copy.source} · {copy.first_seen_at:%Y-%m-%d %H:%M} · {copy.title}"
                       f" · {copy.url or '(no link)'}")


def _one_line(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


@contextmanager
def _store(settings: Settings | None = None) -> Iterator[Any]:
    """The store the settings name, open for one command, its clock measured: what it shows
    and writes is by the database server's clock, as the daemon's are."""
    from monitor.store import Store

    store = Store.open((settings or _settings()).database_url)
    try:
        store.measure_clock()
        yield store
    finally:
        store.close()


def _ago(when: Any, now: Any) -> str:
    """`3m ago`, `in 12m`: how far a time is from now, in its largest unit."""
    if when is None:
        return "never"
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            amount = f"{span / size:.0f}{unit}"
            break
    else:
        amount = f"{span:.0f}s"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _source_status(source: Any) -> str:
    if source.disabled_at is not None:
        return "disabled"
    if source.consecutive_failures:
        return f"failing ×{source.consecutive_failures}"
    if source.last_polled_at is None:
        return "new"
    return "ok"


@cli.group(invoke_without_command=True)
@click.option("--failing", is_flag=True, help="Only sources that are failing or disabled.")
@click.pass_context
def sources(ctx: click.Context, failing: bool) -> None:
    """Every source: its last fetch, status, items, interval, next poll and last error."""
    if ctx.invoked_subcommand is not None:
        return
    with _store() as store:
        rows = store.source_overview()
        now = store.clock()
    if failing:
        rows = [(s, n) for s, n in rows if s.consecutive_failures or s.disabled_at]
    if not rows:
        click.echo("no failing sources" if failing else
                   "no sources yet: `monitor run` adds those rules/feeds.yaml names")
        return
    click.echo(f"{'SOURCE':<28} {'STATUS':<12} {'HTTP':>4} {'LAST FETCH':<10} {'ITEMS':>6} "
               f"{'EVERY':>6} {'NEXT POLL':<10} ERROR")
    for source, items in rows:
        every = source.polling_interval.total_seconds()
        every_text = _ago(now + source.polling_interval, now).removeprefix("in ") + \
            ("" if source.pinned else "~")
        next_text = "—" if source.disabled_at else (
            "polling" if source.leased_until and source.leased_until > now else
            "due" if source.next_poll_at <= now else _ago(source.next_poll_at, now))
        error = source.disabled_reason or source.last_error or ""
        click.echo(f"{_one_line(source.label, 28):<28} {_source_status(source):<12} "
                   f"{source.last_status or '':>4} {_ago(source.last_polled_at, now):<10} "
                   f"{items:>6} {every_text if every else '':>6} {next_text:<10} "
                   f"{_one_line(error, 60)}")
    click.echo("(~: adapts to how often the source publishes)")


@sources.command("enable")
@click.argument("url")
def sources_enable(url: str) -> None:
    """Poll a source again that its server had said is gone (410)."""
    with _store() as store:
        found = store.enable_source(url, store.clock())
    if not found:
        raise click.ClickException(f"no source {url!r}: `monitor sources` lists them")
    click.echo(f"enabled {url}: polled at the next tick")


@cli.group(invoke_without_command=True)
@click.option("--state", type=click.Choice(["pending", "sending", "sent", "failed", "dead"]),
              help="Only alerts in this state.")
@click.option("--destination", help="Only alerts for this destination.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def alerts(ctx: click.Context, state: str | None, destination: str | None,
           limit: int) -> None:
    """The outbox, newest first: each alert's state, attempts and last error."""
    if ctx.invoked_subcommand is not None:
        return
    from monitor.store import Store

    settings = _settings()
    store = Store.open(settings.database_url)
    try:
        counts = store.alert_counts()
        rows = store.alerts(status=state, destination=destination, limit=limit)
    finally:
        store.close()
    click.echo("  ".join(f"{s}: {counts.get(s, 0)}" for s in
                         ("pending", "sending", "sent", "failed", "dead")))
    if not rows:
        click.echo("no alerts" + (f" in state {state}" if state else ""))
        return
    click.echo(f"{'ID':>6}  {'STATE':<8} {'DESTINATION':<14} {'TRIES':>5}  {'WHEN (UTC)':<16}  "
               "TITLE / LAST ERROR")
    for row in rows:
        when = row.sent_at if row.status == "sent" else row.next_attempt_at
        title = ("↳ " if row.reply else "") + _one_line(row.title, 70)
        click.echo(f"{row.id:>6}  {row.status:<8} {_one_line(row.destination, 14):<14} "
                   f"{row.attempts:>5}  {when:%Y-%m-%d %H:%M}  {title}")
        if row.last_error and row.status != "sent":
            click.echo(f"{'':>39}{_one_line(row.last_error, 90)}")


@alerts.command("show")
@click.argument("alert_id", type=int)
def alerts_show(alert_id: int) -> None:
    """One alert: what it says, where it goes, and every attempt with its error."""
    from monitor.store import Store

    settings = _settings()
    store = Store.open(settings.database_url)
    try:
        found = store.alert(alert_id)
    finally:
        store.close()
    if found is None:
        raise click.ClickException(f"no alert {alert_id}")
    row, attempts = found
    click.echo(f"alert {row.id} · {row.status} · to {row.destination}"
               + (" · thread reply" if row.reply else ""))
    click.echo(f"  title:    {_one_line(row.title, 200)}")
    click.echo(f"  source:   {row.source} · {row.url or '(no link)'}")
    click.echo("  rules:    " + "; ".join(
        f"{r.get('name') or r['id']} ({', '.join(r.get('terms') or ()) or 'no terms'})"
        for r in row.rules))
    click.echo(f"  created:  {row.created_at:%Y-%m-%d %H:%M:%S} UTC")
    if row.status == "sent" and row.sent_at:
        click.echo(f"  sent:     {row.sent_at:%Y-%m-%d %H:%M:%S} UTC")
    elif row.status in ("pending", "failed"):
        click.echo(f"  next try: {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC")
    if row.last_error:
        click.echo(f"  error:    {row.last_error}")
    click.echo(f"  attempts: {row.attempts}")
    for attempt in attempts:
        grouped = f" (in a message of {attempt.grouped})" if attempt.grouped > 1 else ""
        click.echo(f"    {attempt.at:%Y-%m-%d %H:%M:%S}  {attempt.outcome:<6}{grouped}"
                   + (f"  {attempt.error}" if attempt.error else ""))


@alerts.command("retry")
@click.argument("alert_ids", type=int, nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead alert.")
def alerts_retry(alert_ids: tuple[int, ...], all_dead: bool) -> None:
    """Give dead alerts a fresh set of attempts (after fixing what killed them)."""
    if bool(alert_ids) == all_dead:
        raise click.UsageError("name the dead alerts to retry, or pass --all-dead")
    with _store() as store:
        retried = store.retry_dead(None if all_dead else list(alert_ids), store.clock())
    skipped = sorted(set(alert_ids) - set(retried))
    click.echo(f"{len(retried)} alert(s) pending again" +
               (f": {', '.join(map(str, retried))}" if retried and alert_ids else ""))
    if skipped:
        click.echo(f"not dead (or no such alert), left alone: {', '.join(map(str, skipped))}",
                   err=True)
        sys.exit(1)


@cli.group()
def notify() -> None:
    """Destinations."""


@notify.command("list")
def notify_list() -> None:
    """The configured destinations and when each sends."""
    settings = _settings()
    for name, destination in settings.configured_destinations().items():
        click.echo(f"{name:<16} {destination.describe()}")


@notify.command("test")
@click.argument("destination")
def notify_test(destination: str) -> None:
    """Send a sample alert to DESTINATION now and say what happened."""
    from monitor.errors import PermanentFailure, RetryLater
    from monitor.notify import build_notifier
    from monitor.notify.message import sample

    settings = _settings()
    found = settings.configured_destinations()
    if destination not in found:
        raise click.ClickException(f"unknown destination {destination!r} (configured: "
                                   f"{', '.join(sorted(found))})")

    async def send() -> str | None:
        notifier = build_notifier(settings, found[destination])
        try:
            return await notifier.send(sample())
        finally:
            await notifier.aclose()

    try:
        ref = asyncio.run(send())
    except RetryLater as exc:
        raise click.ClickException(f"{destination}: not delivered, would be retried: {exc}")
    except PermanentFailure as exc:
        raise click.ClickException(f"{destination}: refused, would not be retried: {exc}")
    click.echo(f"{destination}: sent ({found[destination].describe()})"
               + (f" as {ref}" if ref else ""))


@rules.command("test")
@click.argument("items", required=False, type=click.File("r", encoding="utf-8"))
@click.option("--feed", metavar="URL", help="Test against a live feed, fetched now.")
@click.option("--since", metavar="WINDOW",
              help="Backtest: stored items first seen in this window (7d, 24h, …); prints "
                   "those that would alert, sends nothing.")
@rules_dir_option
def rules_test(items: Any, feed: str | None, since: str | None,
               rules_dir: Path | None) -> None:
    """What would match, and why. Reads items as JSON Lines from ITEMS (or standard input),
    one JSON line out per item: {"id", "rules", "terms", "where"}."""
    from monitor import rulestest
    from monitor.engine import Engine

    if sum(x is not None for x in (items, feed, since)) > 1:
        raise click.UsageError("give one of ITEMS, --feed or --since")
    settings = _settings(rules_dir=rules_dir)
    ruleset = _load_rules(settings)
    engine = Engine(ruleset.rules)
    tags = {f.url: tuple(f.tags) for f in ruleset.feeds}
    out = click.get_text_stream("stdout")
    bad = 0
    if feed is not None:
        names = {f.url: f.name for f in ruleset.feeds if f.name}
        documents, extra = _feed_documents(settings, feed, tags, names.get(feed))
        tally = rulestest.run(engine, documents, out, extra=extra)
    elif since is not None:
        documents, extra = _stored_documents(settings, since, tags)
        tally = rulestest.run(engine, documents, out, only_matches=True, extra=extra)
    else:
        stream = items or click.get_text_stream("stdin")
        good = []
        for entry in rulestest.read_jsonl(stream):
            if isinstance(entry, rulestest.BadLine):
                bad += 1
                click.echo(f"{getattr(stream, 'name', 'stdin')}:{entry}", err=True)
            else:
                good.append(entry)
        tally = rulestest.run(engine, good, out)
    click.echo(tally.summary() + (f"; {bad} bad line(s)" if bad else ""), err=True)
    if bad:
        sys.exit(1)


def _feed_documents(settings: Settings, url: str, tags: dict,
                    name: str | None) -> tuple[list, dict]:
    from monitor.errors import FetchError
    from monitor.fetch import Fetcher
    from monitor.normalize import normalize_entry
    from monitor.parse import parse_feed

    async def fetch() -> Any:
        async with Fetcher(settings) as fetcher:
            return await fetcher.fetch(url)
    try:
        fetched = asyncio.run(fetch())
        parsed = parse_feed(fetched.body or b"", url=fetched.feed_url or url,
                            content_type=fetched.content_type)
    except FetchError as exc:
        raise click.ClickException(f"cannot read {url}: {exc.reason}") from None
    documents, extra = [], {}
    for entry in parsed.entries:
        item = normalize_entry(entry, feed_language=parsed.language)
        item_id = item.guid or item.url or item.identity
        documents.append((item_id, item.document(source=name or parsed.title or url, feed=url,
                                                 tags=tags.get(url, ()))))
        extra[item_id] = {"title": item.title}
    return documents, extra


def _stored_documents(settings: Settings, since: str, tags: dict) -> tuple[Any, dict]:
    from monitor.durations import parse_duration
    from monitor.match import Document

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    extra: dict[str, dict] = {}

    def documents() -> Any:
        with _store(settings) as store:
            for item, source in store.items_since(store.clock() - window):
                label = source.name or source.feed_title or source.url
                item_id = item.guid or item.url or item.identity
                extra[item_id] = {"title": item.title, "source": label,
                                  "first_seen_at": item.first_seen_at.isoformat()}
                yield item_id, Document(
                    title=item.title, summary=item.summary, content=item.content,
                    source=label, url=item.canonical_url or item.url or "", feed=source.url,
                    tags=tags.get(source.url, ()), lang=item.language or "")
    return documents(), extra


@rules.command("schema")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the schema here (e.g. rules/schema.json) instead of to stdout.")
def rules_schema(output: Path | None) -> None:
    """Print the JSON Schema of rule files, for editors to complete and validate them."""
    import json

    from monitor.rules import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")


def main() -> None:
    cli(prog_name="monitor")
