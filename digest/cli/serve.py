"""`digest serve`: the web app (signup, confirmation, unsubscribe, web copies) under uvicorn."""

from __future__ import annotations

import copy
import ipaddress
import logging
from typing import Any

import typer

from digest.cli.common import console, engine, reports_errors, settings


def is_loopback(host: str) -> bool:
    """True only for addresses nobody else can reach; `0.0.0.0`, a LAN IP or a name are public."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RedactTokens(logging.Filter):
    """Takes the tokens out of uvicorn's access log lines (`/u/<token>`, `/confirm/<token>`,
    `?t=<token>`): a log that outlives the request must not hold links that unsubscribe or
    identify readers. Method, route, status and time stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        from subscribers.links import redact

        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = args[:2] + (redact(args[2]),) + args[3:]
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging set-up, with `RedactTokens` on the access logger."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["formatters"]["access"]["fmt"] = (
        '%(asctime)s %(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s')
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_tokens"]
    return config


@reports_errors
def serve(host: str = typer.Option("127.0.0.1", "--host",
                                   help="interface to listen on; anything but loopback is public "
                                        "and needs DIGEST_SECRET_KEY"),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port"),
          proxy_headers: bool = typer.Option(False, "--proxy-headers",
                                             help="trust X-Forwarded-For from a reverse proxy on "
                                                  "this machine (per-client rate limits)")) -> None:
    """Serve the subscriber pages: /subscribe, /confirm, /u (one-click unsubscribe), /issues."""
    import uvicorn

    from digest.web.app import create_app

    cfg = settings()
    public = not is_loopback(host)
    cfg.signing_key(public=public)  # a missing secret is the first thing to hear about
    app = create_app(cfg, engine(), public=public)
    console.print(f"serving {cfg.site_name} on http://{host}:{port} (links use {cfg.base_url})",
                  highlight=False)
    uvicorn.run(app, host=host, port=port, proxy_headers=proxy_headers,
                forwarded_allow_ips="127.0.0.1" if proxy_headers else None, log_level="info",
                log_config=log_config())


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
