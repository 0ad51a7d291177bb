"""Outcomes back from providers: webhook verification per provider, and recording their events."""
