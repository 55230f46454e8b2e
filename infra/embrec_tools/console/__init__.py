"""``embrec console``: a local web console over the embrec API and the deployment's bucket and tables.

Server-rendered HTML from the standard library (no script, no CDN, works offline), charts as inline SVG.
Modules: ``api`` (the HTTP client: plain, SigV4 for ``--aws``, bearer for ``--token``), ``reads`` (bounded
reads of the bucket and tables through the layer's adapters), ``charts`` (SVG), ``pages`` (HTML, pure),
``server`` (routes and the HTTP server). :func:`add_cli` registers the command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from embrec_tools.console.api import ApiClient, BearerToken, SigV4
from embrec_tools.console.server import Console, ConsoleConfig, ConsoleServer

__all__ = [
    "DEFAULT_EVAL_RESULTS",
    "DEFAULT_PORT",
    "Console",
    "ConsoleConfig",
    "ConsoleServer",
    "add_cli",
    "build_console",
]

DEFAULT_PORT = 8300
#: Where ``embrec eval`` saves its latest results by default (its ``--out``), and where the console looks.
DEFAULT_EVAL_RESULTS = Path(".cache") / "eval" / "latest.json"
#: The template's default ``RebuildRate``: the schedule assumed with ``--aws`` unless ``--rebuild-rate``.
AWS_REBUILD_RATE = "rate(1 hour)"


def build_console(args: argparse.Namespace) -> Console:
    """The console the parsed ``embrec console`` arguments describe (nothing is contacted yet)."""
    from embrec.app.runtime import Runtime
    from embrec.errors import ConfigurationError
    from embrec_tools.console.reads import StackReads
    from embrec_tools.settings import cli_settings

    settings = cli_settings(args.aws)
    if args.aws:
        import boto3

        if not args.api:
            raise ConfigurationError(
                "--api", "with --aws, give the deployed API's URL (the ApiUrl stack output)"
            )
        credentials = boto3.session.Session(region_name=settings.region).get_credentials()
        if credentials is None:
            raise ConfigurationError("--aws", "no AWS credentials found (environment, profile or role)")
        auth: SigV4 | BearerToken | None = SigV4(credentials, settings.region)
        rate = args.rebuild_rate or AWS_REBUILD_RATE
    else:
        auth = None
        rate = args.rebuild_rate or f"rate({settings.rebuild_seconds} seconds)"
    if args.token:
        auth = BearerToken(args.token)
    api_url = args.api or f"http://127.0.0.1:{settings.port}"
    return Console(
        ApiClient(api_url, auth),
        StackReads(Runtime(settings)),
        ConsoleConfig(rebuild_rate=rate, eval_results=Path(args.eval_results)),
    )


def _run(args: argparse.Namespace) -> int:
    from embrec_tools.demo import quiet_logs

    quiet_logs()
    console = build_console(args)
    server = ConsoleServer(console, host=args.host, port=args.port)
    endpoint = console.reads.runtime.settings.aws_endpoint or "your AWS account"
    print(f"embrec console on {server.url}  (API {console.api.base_url}; bucket and tables at {endpoint})")
    print("Ctrl-C stops it", flush=True)
    server.serve_forever()
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``embrec console``."""
    cmd = subparsers.add_parser("console", help="a local web console: overview, search, users, experiments")
    cmd.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})"
    )
    cmd.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    cmd.add_argument("--api", default=None, help="API base URL (default http://127.0.0.1:EMBREC_PORT)")
    cmd.add_argument(
        "--aws",
        action="store_true",
        help="a deployed stack: SigV4-sign API requests and read the bucket and tables with your "
        "AWS credentials (needs --api and the EMBREC_BUCKET / EMBREC_*_TABLE names)",
    )
    cmd.add_argument(
        "--token",
        default=None,
        help="bearer token for an API in JWT mode (sent instead of a signature; with --aws the "
        "bucket and tables are still read with your AWS credentials)",
    )
    cmd.add_argument(
        "--eval-results",
        default=str(DEFAULT_EVAL_RESULTS),
        help=f"the `embrec eval --out` file to show (default {DEFAULT_EVAL_RESULTS})",
    )
    cmd.add_argument(
        "--rebuild-rate",
        default=None,
        help="the rebuild schedule expression (default: EMBREC_REBUILD_SECONDS locally, "
        f"{AWS_REBUILD_RATE} with --aws, the template's default RebuildRate)",
    )
    cmd.set_defaults(handler=_run)
