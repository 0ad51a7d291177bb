"""The `digest` command. Each area registers its commands from its own module in this folder."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="The weekly verdict digest: import comparisons, preview, send, schedule.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# The areas, in the order `digest --help` lists their commands.
AREAS = ("content", "demo", "doctor", "issue", "schedule", "send", "pause", "report", "serve",
         "subscribers", "votes")

for _area in AREAS:
    importlib.import_module(f"digest.cli.{_area}").register(app)
