"""Destinations: where alerts go, and when.

A destination is a name (what a rule's `notify:` says) bound to a channel and its secrets, all
from the environment — rule files never hold secrets. `slack` and `email` come from the
contract's flat settings (`MONITOR_SLACK_WEBHOOK_URL`, `MONITOR_EMAIL_TO`, …); more are named
under `MONITOR_DESTINATIONS__<NAME>__<FIELD>` (or one JSON value in `MONITOR_DESTINATIONS`).

Each destination also says when it may be sent to: `immediate`, `hourly` or `daily at 08:00`
(a digest, in its time zone, fired by an APScheduler cron trigger), and optional quiet hours
that hold alerts until they end. An urgent rule's alerts skip both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SCHEDULE = re.compile(r"^(immediate|hourly|daily at (\d{1,2}):(\d{2}))$")
_QUIET = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")

ChannelType = Literal["slack", "email", "webhook", "apprise", "console"]


def _clock(hours: str, minutes: str) -> time:
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return time(h, m)


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class DestinationSpec(BaseModel):
    """One named destination, as written in the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ChannelType
    # Slack: an incoming webhook, or a bot token and a channel (bot mode: threads).
    webhook_url: SecretStr | None = None
    bot_token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api"
    # Email: recipients; the SMTP server and sender are the MONITOR_SMTP_* settings.
    to: Annotated[list[str], NoDecode] = []
    # A generic JSON webhook, and Apprise URLs (comma-separated; secret: they hold tokens).
    url: SecretStr | None = None
    urls: SecretStr | None = None
    # When.
    schedule: str = "immediate"
    timezone: str = "UTC"
    quiet_hours: str | None = None
    # At most one message per `pace` seconds, with bursts of `burst`.
    pace: float | None = Field(default=None, ge=0)
    burst: int = Field(default=3, ge=1)
    # More alerts than this due at once go as grouped messages instead of a flood.
    group_above: int = Field(default=5, ge=1)

    @field_validator("to", mode="before")
    @classmethod
    def _recipients(cls, value: object) -> object:
        return _split(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        value = " ".join(value.lower().split())
        found = _SCHEDULE.match(value)
        if not found:
            raise ValueError("schedule must be 'immediate', 'hourly' or 'daily at HH:MM'")
        if found.group(2):
            _clock(found.group(2), found.group(3))
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use a name like Europe/Paris)")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        found = _QUIET.match(value.strip())
        if not found:
            raise ValueError("quiet_hours must look like 22:00-07:00")
        start, end = _clock(*found.group(1, 2)), _clock(*found.group(3, 4))
        if start == end:
            raise ValueError("quiet hours must not start and end at the same time")
        return value.strip()

    @model_validator(mode="after")
    def _complete(self) -> DestinationSpec:
        needs = {
            "slack": self.webhook_url is not None or (self.bot_token is not None
                                                      and bool(self.channel)),
            "email": bool(self.to),
            "webhook": self.url is not None,
            "apprise": self.urls is not None,
            "console": True,
        }
        if not needs[self.type]:
            raise ValueError({
                "slack": "a slack destination needs webhook_url, or bot_token and channel",
                "email": "an email destination needs to (comma-separated recipients)",
                "webhook": "a webhook destination needs url",
                "apprise": "an apprise destination needs urls",
            }[self.type])
        for secret in ("webhook_url", "url"):
            value = getattr(self, secret)
            if value is not None and not value.get_secret_value().startswith(
                    ("https://", "http://")):
                raise ValueError(f"{secret} must be an http(s) URL")
        return self


@dataclass(frozen=True)
class Schedule:
    """When a destination may be sent to."""

    every: Literal["immediate", "hourly", "daily"] = "immediate"
    at: time | None = None
    zone: ZoneInfo = ZoneInfo("UTC")
    quiet: tuple[time, time] | None = None

    @classmethod
    def of(cls, spec: DestinationSpec) -> Schedule:
        found = _SCHEDULE.match(spec.schedule)
        assert found is not None  # validated
        every = found.group(1).split()[0]
        at = _clock(found.group(2), found.group(3)) if found.group(2) else None
        quiet = None
        if spec.quiet_hours:
            q = _QUIET.match(spec.quiet_hours)
            assert q is not None
            quiet = (_clock(*q.group(1, 2)), _clock(*q.group(3, 4)))
        return cls(every, at, ZoneInfo(spec.timezone), quiet)  # type: ignore[arg-type]

    @property
    def digest(self) -> bool:
        return self.every != "immediate"

    def trigger(self) -> CronTrigger | None:
        """The cron trigger of a digest destination (None when it sends at once)."""
        if self.every == "hourly":
            return CronTrigger(minute=0, timezone=self.zone)
        if self.every == "daily":
            assert self.at is not None
            return CronTrigger(hour=self.at.hour, minute=self.at.minute, timezone=self.zone)
        return None

    def release_at(self, created: datetime, *, urgent: bool = False) -> datetime:
        """When an alert created at `created` may be sent: at once, at the next digest, or
        when the quiet hours end. Urgent alerts go at once."""
        if urgent:
            return created
        when = created
        trigger = self.trigger()
        if trigger is not None:
            fire = trigger.get_next_fire_time(None, created)
            assert fire is not None
            when = fire.astimezone(created.tzinfo)
        return self.quiet_end(when) or when

    def quiet_end(self, moment: datetime) -> datetime | None:
        """If `moment` falls in the quiet hours, when they end; else None."""
        if self.quiet is None:
            return None
        start, end = self.quiet
        local = moment.astimezone(self.zone)
        now = local.time()
        inside = start <= now < end if start < end else (now >= start or now < end)
        if not inside:
            return None
        day = local.date() if now < end else local.date() + timedelta(days=1)
        ends = datetime.combine(day, end, tzinfo=self.zone)
        return ends.astimezone(moment.tzinfo)


# Pacing by channel: Slack allows about one message a second per webhook or channel.
DEFAULT_PACE = {"slack": 1.0, "webhook": 0.2, "apprise": 0.5, "email": 0.0, "console": 0.0}


@dataclass(frozen=True)
class Destination:
    name: str
    spec: DestinationSpec
    schedule: Schedule

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def threads(self) -> bool:
        """Slack bot mode: later copies of a story go as thread replies."""
        return self.spec.type == "slack" and self.spec.bot_token is not None

    @property
    def pace(self) -> float:
        return self.spec.pace if self.spec.pace is not None else DEFAULT_PACE[self.spec.type]

    def describe(self) -> str:
        s = self.spec
        if s.type == "slack":
            how = f"Slack channel {s.channel} (bot)" if self.threads else "Slack webhook"
        elif s.type == "email":
            how = "email to " + ", ".join(s.to)
        else:
            how = s.type
        when = s.schedule + (f" ({s.timezone})" if s.schedule != "immediate" else "")
        quiet = f", quiet {s.quiet_hours} {s.timezone}" if s.quiet_hours else ""
        return f"{how}, {when}{quiet}"


def destination(name: str, spec: DestinationSpec) -> Destination:
    return Destination(name, spec, Schedule.of(spec))
