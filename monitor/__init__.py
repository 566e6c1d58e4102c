"""monitor: a news-alert daemon that polls feeds, matches rules and alerts once per story."""

__version__ = "0.1.0"
