"""CLI command groups, one module per area; `digest.cli` registers them all."""
