"""Serve a saved model over HTTP, batching concurrent requests.

    python -m emotion_lab.serve MODEL [--host 127.0.0.1] [--port 8000] [--backend auto] [--quantize]

    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["i feel so happy today"]}'
    open http://127.0.0.1:8000/ in a browser: predictions as you type, word attributions, files

MODEL is a saved model folder (or a Lightning checkpoint, torch backend only). Endpoints, limits
and batching: `emotion_lab.inference.server`; measured latency under load, and with slow and idle
clients: docs/performance.md. What a client cannot hold: headers not complete within --header-timeout
and bodies not read within --body-timeout close the connection (408 for a body); past
--limit-concurrency connections and requests at once, 503; Host headers other than the loopback names
(or --allowed-host) get 400. On a network, put a proxy in front (docs/performance.md).
Needs the `serve` extra (FastAPI and uvicorn): pip install -e '.[serve]'.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from emotion_lab.errors import UserInputError
from emotion_lab.inference.batching import Limits
from emotion_lab.inference.options import add_model_options, load_model

# Under the usual limit of 1024 open files, so the server answers 503 before accept() starts failing.
LIMIT_CONCURRENCY = 512
HEADER_TIMEOUT_S = 10.0  # headers are a few hundred bytes: 10 s is slow even on a bad link
KEEP_ALIVE_S = 5  # uvicorn's default

log = logging.getLogger("emotion_lab.serve")


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m emotion_lab.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved model folder (or a Lightning .ckpt)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface; then --allowed-host the names clients use)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of the model")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="characters per text")
    parser.add_argument("--max-texts", type=int, default=defaults.max_texts, help="texts per request")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch_texts, help="texts collected per batch")
    parser.add_argument(
        "--forward-batch",
        type=int,
        default=defaults.forward_batch,
        help="a batch runs sorted by length in chunks of this many texts",
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=defaults.max_wait_ms, help="how long a batch waits for more requests"
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_S,
        help="seconds from a connection's start (or its previous answer) to a request's complete headers, else "
        f"closed (default {HEADER_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=defaults.body_timeout_s,
        help=f"seconds from a request's headers to its whole body, else 408 (default {defaults.body_timeout_s:g})",
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=KEEP_ALIVE_S,
        help=f"seconds an idle connection stays open after an answer (default {KEEP_ALIVE_S})",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=LIMIT_CONCURRENCY,
        help=f"connections and requests at once; beyond it, 503 (default {LIMIT_CONCURRENCY})",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header name to answer besides 127.0.0.1, localhost and ::1 (repeatable; any port; "
        "'*.example.com' for subdomains, '*' for any); others get 400",
    )
    parser.add_argument(
        "--explain-threads",
        type=int,
        default=1,
        help="threads of the process that computes explanations (integrated gradients on the fp32 torch network, "
        "at a lower CPU priority than predictions); 0: no explanations (default 1)",
    )
    add_model_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        import uvicorn

        from emotion_lab.inference.explain_worker import ExplainWorker
        from emotion_lab.inference.header_deadline import header_deadline_protocol
        from emotion_lab.inference.server import LOOPBACK_HOSTS, create_app
    except ImportError as err:
        print(
            f"error: serving needs FastAPI and uvicorn ({err.name} is missing): pip install -e '.[serve]'",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("port", "threads", "max_chars", "max_texts", "max_batch", "forward_batch", "limit_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    for name in ("header_timeout", "body_timeout", "timeout_keep_alive"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be > 0 seconds")
    for host in args.allowed_host:
        if not host or "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
            parser.error(f"--allowed-host {host!r}: a host name, '*.domain' or '*'")
        if host.count(":") == 1 or "]:" in host:  # IPv6 literals have two or more
            parser.error(f"--allowed-host {host!r}: a name without its port (every port of it is answered)")
    if args.port > 65535:
        parser.error(f"--port {args.port}: must be 1..65535")
    if args.explain_threads < 0:
        parser.error(f"--explain-threads {args.explain_threads}: must be >= 0 (0: no explanations)")
    if args.max_wait_ms < 0:
        parser.error(f"--max-wait-ms {args.max_wait_ms}: must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        predictor = load_model(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    card_file = Path(args.model) / "README.md"
    limits = Limits(
        max_chars=args.max_chars,
        max_texts=args.max_texts,
        max_batch_texts=args.max_batch,
        forward_batch=args.forward_batch,
        max_wait_ms=args.max_wait_ms,
        body_timeout_s=args.body_timeout,
    )
    card = card_file.read_text(errors="replace") if card_file.is_file() else ""
    # Starlette compares IPv6 literals in brackets, as they appear in a Host header.
    extra = [f"[{h}]" if ":" in h and not h.startswith("[") else h.lower() for h in args.allowed_host]
    explainer = (
        ExplainWorker(args.model, limits, args.trust_module, threads=args.explain_threads, spelling=args.spelling)
        if args.explain_threads
        else None
    )
    app = create_app(predictor, limits, card=card, allowed_hosts=[*LOOPBACK_HOSTS, *extra], explainer=explainer)
    log.info(
        "serving %s (%s, %d threads; explanations: %s) on http://%s:%d (page: http://%s:%d/)",
        args.model,
        predictor.backend.name,
        args.threads,
        f"{args.explain_threads} thread(s)" if explainer else "off",
        args.host,
        args.port,
        args.host,
        args.port,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        http=header_deadline_protocol(args.header_timeout),
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=args.limit_concurrency,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
