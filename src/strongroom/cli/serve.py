"""``strongroom serve``: run the gateway."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
import uvicorn

from strongroom.api.app import create_app
from strongroom.cli.common import DataDirOption, fail, settings_or_exit
from strongroom.crypto.keyed_hash import load_or_create_pepper
from strongroom.errors import StrongroomError
from strongroom.observability.logging import configure_logging
from strongroom.services.bootstrap import create_bootstrap_key


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8080).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Start the gateway: API, /health, /ready and /metrics on one port."""
    settings = settings_or_exit(host=host, port=port, data_dir=data_dir)
    configure_logging(settings.log_level)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not settings.api_keys:
            key = create_bootstrap_key(settings.data_dir, load_or_create_pepper(settings.data_dir))
            if key is not None:
                # Shown once, on the terminal only: the data dir keeps just its keyed hash.
                print(
                    "No API key is configured; created a bootstrap key. It is shown once:\n"
                    f"  {key}\nKeep it safe, or set STRONGROOM_API_KEYS.",
                    file=sys.stdout,
                    flush=True,
                )
        app = create_app(settings)
    except (StrongroomError, OSError, ValueError) as exc:
        fail(str(exc))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        backlog=4096,
    )
    uvicorn.Server(config).run()
