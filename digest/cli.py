"""The `digest` command. Each area registers its commands from `digest.commands.<area>`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import digest.commands

app = typer.Typer(help="The weekly verdict digest: import comparisons, preview, send, schedule.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

for _mod in sorted(m.name for m in pkgutil.iter_modules(digest.commands.__path__)):
    if _mod != "common":
        module = importlib.import_module(f"digest.commands.{_mod}")
        module.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
