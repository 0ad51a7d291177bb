"""`python -m digest.cli`: the same command as the `digest` script (workers start it so)."""

from digest.cli import app

app()
