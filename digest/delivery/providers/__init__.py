"""Delivery backends behind one interface (`digest.delivery.providers.base.Provider`)."""

from __future__ import annotations

from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient

__all__ = ["Letter", "Outcome", "Provider", "Recipient", "build_provider"]


def build_provider(settings) -> Provider:
    """The configured provider. HTTP providers are added to `digest.delivery.providers.registry`."""
    from digest.delivery.providers.registry import build

    return build(settings)
