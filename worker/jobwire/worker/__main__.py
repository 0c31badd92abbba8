"""`python -m jobwire.worker MODULE:FUNCTION --endpoint NAME --server HOST:PORT --key KEY`.

`main(argv)` is the whole command, so that another CLI (`jobwire worker ...`) can delegate to it.
Exit codes: 0 after a drain, 75 when the worker must be restarted (`WorkerRecycle`), 77 when the server
refused it (`WorkerRejected`), 1 on other worker errors, 130 after a second SIGINT/SIGTERM, 2 on usage
errors.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, cast

from jobwire.worker._entry import run_worker
from jobwire.worker._errors import WorkerError, WorkerRecycle, WorkerRejected
from jobwire.worker._prefetch import PrefetchSetting, check_prefetch
from jobwire.worker._runner import Handler

EXIT_RECYCLE = 75  # EX_TEMPFAIL: restart me
EXIT_REJECTED = 77  # EX_NOPERM
KEY_ENV = "JOBWIRE_WORKER_KEY"

log = logging.getLogger("jobwire.worker")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _prefetch(text: str) -> PrefetchSetting:
    """The text as a setting; its range (it depends on --concurrency) is `check_prefetch`'s."""
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be auto or a whole number") from None


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m jobwire.worker",
        description="Serve a jobwire endpoint's jobs with a Runpod-style handler.",
    )
    parser.add_argument("handler", metavar="MODULE:FUNCTION", help="the handler, e.g. app.handler:handler")
    parser.add_argument("--endpoint", required=True, help="the endpoint to serve")
    parser.add_argument("--server", default="127.0.0.1:50051", help="gRPC address (default: %(default)s)")
    parser.add_argument("--key", default=os.environ.get(KEY_ENV), help=f"a worker key (default: ${KEY_ENV})")
    parser.add_argument("--concurrency", type=_positive, default=1, help="jobs at once (default: 1)")
    parser.add_argument(
        "--prefetch",
        type=_prefetch,
        default="auto",
        help="jobs held beyond --concurrency while they wait for a slot: auto (for fast handlers only), "
        "or 0 to 3 x --concurrency (default: auto)",
    )
    parser.add_argument("--worker-id", help="default: hostname-pid-random")
    parser.add_argument(
        "--aggregate-stream",
        action="store_true",
        help="a generator's final output is everything it yielded (default: [])",
    )
    parser.add_argument(
        "--stuck-after",
        type=float,
        default=30.0,
        help="seconds a cancelled handler may keep running before the worker recycles (default: 30)",
    )
    parser.add_argument("--log-level", default="INFO", help="default: INFO")
    return parser


def load_handler(spec: str) -> Handler:
    """Imports `module:attribute` (dotted attributes allowed), like uvicorn's app argument."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected MODULE:FUNCTION, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return cast(Handler, target)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (default: sys.argv[1:]), runs the worker and returns the exit code.

    Usage errors and --help exit through argparse (SystemExit), as usual.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.key:
        parser.error(f"--key or ${KEY_ENV} is required")
    try:
        check_prefetch(args.prefetch, args.concurrency)
    except ValueError as error:
        parser.error(f"--prefetch: {error}")
    # The handler's module is looked up from the working directory, as `python -m` does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        handler = load_handler(args.handler)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(f"cannot load the handler {args.handler}: {exc}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return _run(handler, args)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    try:
        run_worker(
            handler,
            endpoint=args.endpoint,
            key=args.key,
            server=args.server,
            concurrency=args.concurrency,
            prefetch=args.prefetch,
            worker_id=args.worker_id,
            return_aggregate_stream=args.aggregate_stream,
            stuck_after=args.stuck_after,
        )
    except WorkerRecycle as exc:
        log.warning("%s", exc)
        return EXIT_RECYCLE
    except WorkerRejected as exc:
        log.error("%s", exc)
        return EXIT_REJECTED
    except WorkerError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
