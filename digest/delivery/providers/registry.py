"""Maps `DIGEST_PROVIDER` to a configured provider instance.

Missing credentials fail here, before any delivery is claimed, naming the variable to set.
"""

from __future__ import annotations

from digest.errors import ConfigurationError
from digest.delivery.providers.base import Provider


def _token(settings) -> str:
    token = settings.provider_token.get_secret_value() if settings.provider_token else ""
    if not token.strip():
        raise ConfigurationError(f"provider {settings.provider!r} needs an API key: set "
                                 "DIGEST_PROVIDER_TOKEN")
    return token.strip()


def build(settings, **kwargs) -> Provider:
    """The configured provider. `kwargs` go to the provider (tests pass timeouts)."""
    name = settings.provider
    base_url = settings.provider_url or None
    if name == "outbox":
        from digest.delivery.providers.outbox import OutboxProvider

        return OutboxProvider(settings.outbox_dir)
    if name == "smtp":
        from digest.delivery.providers.smtp import SmtpProvider

        if not settings.smtp_url:
            raise ConfigurationError("provider 'smtp' needs DIGEST_SMTP_URL, e.g. "
                                     "smtp+starttls://user:pass@mail.example.com:587")
        options = dict(connections=settings.smtp_connections,
                       messages_per_connection=settings.smtp_messages_per_connection,
                       rate_limit=settings.smtp_rate_limit)
        return SmtpProvider.from_url(settings.smtp_url, **{**options, **kwargs})
    if name == "postmark":
        from digest.delivery.providers.postmark import PostmarkProvider

        return PostmarkProvider(_token(settings), stream=settings.postmark_stream,
                                base_url=base_url, **kwargs)
    if name == "sendgrid":
        from digest.delivery.providers.sendgrid import SendGridProvider

        return SendGridProvider(_token(settings), base_url=base_url, **kwargs)
    if name == "mailgun":
        from digest.delivery.providers.mailgun import MailgunProvider

        if not (settings.mailgun_domain or "").strip():
            raise ConfigurationError("provider 'mailgun' needs the sending domain: set "
                                     "DIGEST_MAILGUN_DOMAIN")
        return MailgunProvider(_token(settings), domain=settings.mailgun_domain.strip(),
                               base_url=base_url, **kwargs)
    if name == "resend":
        from digest.delivery.providers.resend import ResendProvider

        return ResendProvider(_token(settings), base_url=base_url, **kwargs)
    raise ConfigurationError(f"provider {name!r} is not available")
