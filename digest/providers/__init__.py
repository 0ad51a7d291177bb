"""Delivery backends behind one interface (`digest.providers.base.Provider`)."""

from __future__ import annotations

from digest.providers.base import Letter, Outcome, Provider, Recipient

__all__ = ["Letter", "Outcome", "Provider", "Recipient", "build_provider"]


def build_provider(settings) -> Provider:
    """The configured provider. HTTP providers are added to `digest.providers.registry`."""
    from digest.providers.registry import build

    return build(settings)
