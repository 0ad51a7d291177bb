"""Provider webhooks: verify each provider's signature over the raw body, normalise its events
to one `ProviderEvent` type, and apply bounces, complaints and unsubscribes exactly once."""
