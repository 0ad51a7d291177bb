"""All configuration, from `DIGEST_*` environment variables and an optional `.env` file.

Validated once at start-up so a typo in a time zone or a cron expression fails before any mail
is planned, not in the middle of a send.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from digest.errors import ConfigurationError

PROVIDERS = ("outbox", "smtp", "postmark", "sendgrid", "mailgun", "resend")
# When a week's issue that has not started sending is given up as `missed` (schedules.deadline).
DEADLINE_RULES = ("end-of-day", "hours")
# How links in the email are counted (digest.outcomes.clicks): not at all, per link for everyone,
# or per link and reader (opt-in).
CLICK_TRACKING = ("off", "aggregate", "per-subscriber")

# Values people paste from examples; treated as "no secret at all".
SAMPLE_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "development",
                            "please-change", "your-secret-key", "insecure"})
# Used only when no real mail can leave and nothing listens beyond localhost.
LOCAL_ONLY_SECRET = "local-only-insecure-key-never-used-for-real-mail"
# The postal address shipped as the default: a real send must carry the operator's own.
SAMPLE_POSTAL_ADDRESS = "Verdict Digest, 1 Example Street, 10115 Berlin, Germany"
SECRET_HINT = ('generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))" '
               "and set it as DIGEST_SECRET_KEY")


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _month_number(match: re.Match) -> str:
    name = match.group().lower()
    return str(_MONTHS.index(name) + 1) if name in _MONTHS else name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGEST_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    database_url: str = "sqlite:///./digest.db"
    provider: str = "outbox"
    outbox_dir: str = "./outbox"
    provider_url: str | None = None
    provider_token: SecretStr | None = None
    mailgun_domain: str | None = None
    postmark_stream: str = "broadcast"
    smtp_url: str | None = None
    smtp_connections: int = Field(4, ge=1, le=64, description="SMTP connections sending at once")
    smtp_messages_per_connection: int = Field(
        100, ge=1, description="messages before an SMTP connection is replaced by a new one")
    smtp_rate_limit: float = Field(
        0.0, ge=0, description="SMTP messages per second over all connections, evenly spaced; "
                               "0 = none")
    from_: str = Field("Weekly AI Tool Verdicts <digest@localhost>", alias="DIGEST_FROM")
    reply_to: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None
    postal_address: str = SAMPLE_POSTAL_ADDRESS
    timezone: str = "UTC"
    schedule: str = "0 9 * * mon"
    send_deadline_hours: float = Field(24.0, gt=0)
    # `end-of-day`: the end of the local day the issue was due; `hours`: send_deadline_hours later.
    send_deadline: str = "end-of-day"
    webhook_secret: SecretStr | None = None
    unsubscribe_mailto: str | None = None
    list_id: str = "weekly-verdicts"
    site_name: str = "Weekly AI Tool Verdicts"
    rate_limit: float = Field(0.0, ge=0, description="messages per second per provider; 0 = none")
    preview_public: bool = False
    # Reverse proxies whose X-Forwarded-For / Forwarded headers are believed (digest.web.access):
    # comma-separated IPs or CIDRs. None by default: such headers from anyone else are ignored.
    trusted_proxies: str = ""
    # `digest doctor`'s DNS checks: the resolver to ask (`host` or `host:port`; default: the
    # system's), the Return-Path domain the provider bounces to, and DKIM selectors to look up.
    dns_resolver: str | None = None
    bounce_domain: str | None = None
    dkim_selectors: str | None = None
    click_tracking: str = "aggregate"
    # Lets /admin answer beyond loopback, behind a login; unset, it answers 404 there.
    admin_password: SecretStr | None = None

    @field_validator("click_tracking")
    @classmethod
    def _known_tracking(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in CLICK_TRACKING:
            raise ValueError(f"unknown click tracking {value!r}; choose one of "
                             f"{', '.join(CLICK_TRACKING)}")
        return value

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in PROVIDERS:
            raise ValueError(f"unknown provider {value!r}; choose one of {', '.join(PROVIDERS)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron_shape(cls, value: str) -> str:
        """Five fields, each of a form APScheduler reads. `schedules.cron` parses it fully (cron's
        day numbering, its DST rules) where a schedule is used; this check makes a pasted
        six-field or English schedule fail at start-up, whatever the command."""
        from apscheduler.triggers.cron import CronTrigger

        fields = value.split()
        if len(fields) != 5:
            raise ValueError(f"cron expression {value!r} has {len(fields)} fields; expected 5 "
                             "(minute hour day-of-month month day-of-week, e.g. '0 9 * * mon')")
        if not re.fullmatch(r"[0-7a-zA-Z*,/-]+", fields[4]):
            raise ValueError(f"cron expression {value!r}: day of week {fields[4]!r} is not 0-7 or "
                             "sun..sat")
        try:
            CronTrigger(minute=fields[0], hour=fields[1], day=fields[2],
                        month=re.sub(r"[a-zA-Z]{3}", _month_number, fields[3]), timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"cron expression {value!r}: {exc}")
        return " ".join(fields)

    @field_validator("send_deadline")
    @classmethod
    def _known_deadline(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in DEADLINE_RULES:
            raise ValueError(f"unknown deadline rule {value!r}; choose end-of-day (the end of the "
                             "day the issue was due) or hours (DIGEST_SEND_DEADLINE_HOURS after)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        networks = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            try:
                networks.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or a CIDR network "
                                 "(e.g. 10.0.0.5 or 10.0.0.0/8)") from None
        return ",".join(networks)

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base URL {value!r} must be an absolute http(s) URL")
        return value.rstrip("/")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def sends_real_mail(self) -> bool:
        return self.provider != "outbox"

    def signing_key(self, *, public: bool = False) -> bytes:
        """The key for tokens. A real secret is required when mail can go out or the web app is public."""
        raw = self.secret_key.get_secret_value() if self.secret_key else ""
        if raw.strip().lower() in SAMPLE_SECRETS or len(raw) < 16:
            if self.sends_real_mail or public:
                why = (f"provider {self.provider!r} sends real mail" if self.sends_real_mail
                       else "the web app listens beyond localhost")
                state = "missing" if not raw else "a sample or too short (16+ characters)"
                raise ConfigurationError(f"DIGEST_SECRET_KEY is {state}, and {why}; {SECRET_HINT}")
            return LOCAL_ONLY_SECRET.encode()
        return raw.encode()


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "DIGEST_" + "_".join(str(p) for p in err["loc"]).upper().rstrip("_")
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigurationError("invalid settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

