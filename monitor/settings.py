"""Settings from the environment (prefix MONITOR_), a `.env` file, and defaults.

The names are a public contract (see DESIGN.md); every one is documented in `.env.example`.
Per-source values (a feed's `interval:` in feeds.yaml) fall back to these defaults in one place:
`Settings.interval_for`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from monitor.destinations import Destination, DestinationSpec, NAME, destination
from monitor.durations import Duration

DEFAULT_USER_AGENT = "monitor/0.1 (news-alert daemon)"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_", env_file=".env",
                                      env_file_encoding="utf-8", extra="ignore",
                                      env_nested_delimiter="__")

    # The public contract.
    database_url: str = "sqlite:///monitor.db"
    rules_dir: Path = Path("rules")
    slack_webhook_url: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["starttls", "ssl", "none"] = "starttls"
    email_from: str | None = None
    email_to: Annotated[list[str], NoDecode] = []
    first_poll_lookback: Duration = timedelta(hours=24)

    # Destinations beyond the contract's `slack` and `email`.
    slack_bot_token: SecretStr | None = None  # with slack_channel: bot mode, threads
    slack_channel: str | None = None
    slack_api_url: str = "https://slack.com/api"
    destinations: dict[str, DestinationSpec] = {}

    # Operation.
    poll_interval: Duration = timedelta(minutes=10)
    # Sources without an interval in feeds.yaml adapt between these to how often they publish.
    poll_min_interval: Duration = timedelta(minutes=5)
    poll_max_interval: Duration = timedelta(hours=1)
    poll_tick: Duration = timedelta(seconds=30)
    source_lease: Duration = timedelta(minutes=1)
    source_alert_after: Duration = timedelta(hours=2)
    operator_destinations: Annotated[list[str], NoDecode] = []
    parse_processes: int | None = Field(default=None, ge=0, le=16)  # unset: one per spare core
    delivery_tick: Duration = timedelta(seconds=15)
    fetch_timeout: Duration = timedelta(seconds=30)
    fetch_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    fetch_concurrency: int = Field(default=8, ge=1, le=256)
    fetch_per_host: int = Field(default=2, ge=1, le=256)
    max_redirects: int = Field(default=5, ge=0, le=20)
    user_agent: str = DEFAULT_USER_AGENT
    notify_timeout: Duration = timedelta(seconds=20)
    delivery_retry_base: Duration = timedelta(seconds=30)
    delivery_max_attempts: int = Field(default=20, ge=1)
    delivery_lease: Duration = timedelta(minutes=1)
    shutdown_grace: Duration = timedelta(seconds=30)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("email_to", "operator_destinations", mode="before")
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("slack_webhook_url", "smtp_password", "smtp_host", "smtp_username",
                     "email_from", "slack_bot_token", "slack_channel", "parse_processes",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("slack_webhook_url")
    @classmethod
    def _https_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")  # the value itself is never echoed
        return value

    @field_validator("destinations")
    @classmethod
    def _names(cls, value: dict[str, DestinationSpec]) -> dict[str, DestinationSpec]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(f"destination name {name!r}: use lowercase letters, digits, "
                                 "'_' and '-'")
        return value

    @model_validator(mode="after")
    def _email_complete(self) -> Settings:
        emails = [n for n, d in self.destinations.items() if d.type == "email"]
        if self.smtp_host and not (self.email_from and (self.email_to or emails)):
            raise ValueError("MONITOR_SMTP_HOST is set, so MONITOR_EMAIL_FROM and "
                             "MONITOR_EMAIL_TO (or an email destination) must be set too")
        if bool(self.slack_bot_token) != bool(self.slack_channel):
            raise ValueError("MONITOR_SLACK_BOT_TOKEN and MONITOR_SLACK_CHANNEL go together")
        if self.source_lease <= self.fetch_timeout:
            raise ValueError("MONITOR_SOURCE_LEASE must be longer than MONITOR_FETCH_TIMEOUT: "
                             "a source still being fetched would be taken over")
        if self.poll_min_interval > self.poll_max_interval:
            raise ValueError("MONITOR_POLL_MIN_INTERVAL is longer than MONITOR_POLL_MAX_INTERVAL")
        unknown = [n for n in self.operator_destinations
                   if n not in self.configured_destinations()]
        if unknown:
            raise ValueError(f"MONITOR_OPERATOR_DESTINATIONS names {', '.join(unknown)}, "
                             "which is not a configured destination")
        if emails and not (self.smtp_host and self.email_from):
            raise ValueError(f"destination {emails[0]!r} sends email, so MONITOR_SMTP_HOST and "
                             "MONITOR_EMAIL_FROM must be set")
        return self

    def configured_destinations(self) -> dict[str, Destination]:
        """Every destination by name: `slack` and `email` from the flat settings (a
        MONITOR_DESTINATIONS entry of the same name replaces them), then the named ones.
        `console` is always there."""
        found: dict[str, DestinationSpec] = {}
        if self.slack_bot_token is not None:
            found["slack"] = DestinationSpec(type="slack", bot_token=self.slack_bot_token,
                                             channel=self.slack_channel,
                                             api_url=self.slack_api_url)
        elif self.slack_webhook_url is not None:
            found["slack"] = DestinationSpec(type="slack", webhook_url=self.slack_webhook_url)
        if self.email_configured:
            found["email"] = DestinationSpec(type="email", to=list(self.email_to))
        found.update(self.destinations)
        found.setdefault("console", DestinationSpec(type="console"))
        return {name: destination(name, spec) for name, spec in found.items()}

    @property
    def email_configured(self) -> bool:
        return bool(self.smtp_host and self.email_from and self.email_to)

    @property
    def poll_bounds(self) -> tuple[timedelta, timedelta]:
        """The range adapting intervals keep to; it includes MONITOR_POLL_INTERVAL, so asking
        for a shorter default interval than the minimum lowers the minimum."""
        return (min(self.poll_min_interval, self.poll_interval),
                max(self.poll_max_interval, self.poll_interval))

    def interval_for(self, interval: timedelta | None) -> timedelta:
        return interval or self.poll_interval


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and `.env`; errors become one readable ConfigError."""
    from pydantic import ValidationError

    from monitor.errors import ConfigError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "MONITOR_" + "_".join(str(p) for p in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {message}" if error["loc"] else message)
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
