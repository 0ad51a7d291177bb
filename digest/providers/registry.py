"""Maps `DIGEST_PROVIDER` to a configured provider instance."""

from __future__ import annotations

from digest.errors import ConfigurationError
from digest.providers.base import Provider


def build(settings) -> Provider:
    if settings.provider == "outbox":
        from digest.providers.outbox import OutboxProvider

        return OutboxProvider(settings.outbox_dir)
    raise ConfigurationError(f"provider {settings.provider!r} is not available yet")
