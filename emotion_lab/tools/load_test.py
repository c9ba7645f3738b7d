"""Load test of `emotion_lab.serve` at rising concurrency (a benchmark, not a test).

    python -m emotion_lab.tools.load_test --model MODEL [--backend onnx] [--levels 1 4 16 64 16] [--seconds 60]
    python -m emotion_lab.tools.load_test --url http://127.0.0.1:8000       # a server already running

At each concurrency level, that many clients (aiohttp, one process) each send one test sentence per
request, back to back, for `--seconds`; the table has requests/s, p50 / p99 latency, failed
requests, the mean batch the model ran, and the server's resident memory at the start and end of
the level (and its maximum, sampled from /health every second, whose p50 latency is reported too).
Ending with a level already run (`--levels 1 4 16 64 16`, the default) shows whether memory returns to
a plateau or keeps climbing. With `--model` the server is started here on a free port with the given
backend and stopped afterwards. Client and server share the machine: on few cores the client's own CPU
use lowers what the server gets. Writes results.md and results.json.

`--explain-clients N` adds N clients asking for explanations back to back at every level: the
prediction p50 beside explanations, and what an explanation costs, in a table of its own.

Hostile clients, beside the normal ones at every level (loopback only; each stops with its level):

    python -m emotion_lab.tools.load_test --model MODEL --levels 4 --seconds 30 --slow-clients 40 --idle-clients 400
    python -m emotion_lab.tools.load_test --url http://127.0.0.1:8000 --probe-only --seconds 30

`--slow-clients` cycle through the kinds in `SLOW_KINDS` (headers never finished, a declared body never
sent, a body trickled a byte a second), reconnecting whenever the server closes on them;
`--idle-clients` open sockets that never send a byte. Rows say how long the server held each kind and
what it answered. `--probe-only` runs one client of each kind (and one idle socket) for at most
`--seconds` and nothing else: how long any server, or a proxy in front of one, holds them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

from emotion_lab.data.sources import test_split
from emotion_lab.utils.config import PROJECT_ROOT
from emotion_lab.utils.records import markdown_table, provenance, run_record, save_results

_POST = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
# What a slow client sends first, and what it adds every second until the server gives up on it.
SLOW_KINDS = {
    "headers never finished": (_POST, b"X-Slow: 1\r\n"),
    "body never sent": (_POST + b"Content-Length: 100\r\n\r\n", b""),
    "body trickled": (_POST + b"Content-Length: 100000\r\n\r\n", b" "),
    "idle": (b"", b""),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen | None = None, seconds: float = 180.0) -> None:
    """Return once `url`/health answers 200; raise if `process` exits first or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer on {url} within {seconds:.0f} s")


def start_server(model: str, backend: str, threads: int, extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "emotion_lab.serve", model, "--port", str(port), "--backend", backend]
    command += ["--threads", str(threads), *extra]
    with log.open("w") as log_file:  # a file, not a pipe: a pipe nobody reads would stall a chatty server
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, process)
    except RuntimeError as err:
        process.terminate()
        raise SystemExit(f"{err}; its log: {log}") from None
    return process, url


def wait_for_explanations(url: str, seconds: float = 300.0) -> None:
    """Until the server's explanation worker has loaded its model (`/health`: explanations.ready)."""
    deadline = time.monotonic() + seconds
    while not httpx.get(f"{url}/health", timeout=10).json().get("explanations", {}).get("ready"):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{url}: explanations not ready within {seconds:g} s (started with --explain-threads 0?)"
            )
        time.sleep(0.5)


async def hold(url: str, kind: str, until: float, every: float = 1.0) -> dict:
    """One connection of a `SLOW_KINDS` kind: how long the server kept it open (until `until` at most)
    and the status line it answered, if any."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    first, trickle = SLOW_KINDS[kind]
    start, answer, closed = time.monotonic(), b"", False
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as err:
        return {"kind": kind, "held_s": 0.0, "closed": True, "answer": f"connect failed: {err.strerror}"}
    try:
        writer.write(first)
        while (left := until - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(4096), min(every, left))
            except asyncio.TimeoutError:
                if trickle:
                    writer.write(trickle)
                    await writer.drain()
                continue
            if not data:
                closed = True
                break
            answer += data
    except OSError:  # reset by the server while we wrote
        closed = True
    finally:
        writer.close()
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else ""
    return {"kind": kind, "held_s": time.monotonic() - start, "closed": closed, "answer": status}


async def _hostile(url: str, kind: str, until: float, out: list) -> None:
    """Reconnects whenever the server closes on it, until `until`."""
    while time.monotonic() < until - 0.05:
        out.append(await hold(url, kind, until))


def _hostile_summary(held: list[dict], seconds: float) -> dict:
    summary = {}
    for kind in SLOW_KINDS:
        mine = [h for h in held if h["kind"] == kind]
        if not mine:
            continue
        closed = [h["held_s"] for h in mine if h["closed"]]
        answers = sorted({h["answer"] for h in mine if h["answer"]})
        summary[kind] = {
            "connections": len(mine),
            "closed_by_server": len(closed),
            "held_s_max": max(closed) if closed else seconds,  # never closed: held as long as we tried
            "answers": answers,
        }
    return summary


async def _client(
    session, url: str, texts: list[str], until: float, seed: int, out: list, explain: bool = False
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        start = time.perf_counter()
        body = {"text": rng.choice(texts)} | ({"explain": True} if explain else {})
        try:
            async with session.post(f"{url}/predict", json=body) as response:
                ok = response.status == 200 and len((await response.json())["predictions"]) == 1
                if response.status == 503 and explain:  # the explanation worker's own limit: wait as told
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
            ok = False
        out.append((time.perf_counter() - start, ok))


async def _health(session, url: str) -> dict:
    async with session.get(f"{url}/health") as response:
        return await response.json()


async def _memory(session, url: str, until: float, samples: list, health_ms: list) -> None:
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            samples.append((await _health(session, url))["rss_mb"])
            health_ms.append((time.perf_counter() - start) * 1000)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
            pass
        await asyncio.sleep(1.0)


async def run_level(
    url: str,
    texts: list[str],
    concurrency: int,
    seconds: float,
    slow_clients: int = 0,
    idle_clients: int = 0,
    explain_clients: int = 0,
) -> dict:
    results: list[tuple[float, bool]] = []
    explained: list[tuple[float, bool]] = []
    memory: list[float] = []
    health_ms: list[float] = []
    held: list[dict] = []
    slow_kinds = [kind for kind in SLOW_KINDS if kind != "idle"]
    connector = aiohttp.TCPConnector(limit=concurrency + explain_clients + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        before = await _health(session, url)
        until = time.monotonic() + seconds
        started = time.perf_counter()
        await asyncio.gather(
            _memory(session, url, until, memory, health_ms),
            *(_client(session, url, texts, until, seed, results) for seed in range(concurrency)),
            *(_client(session, url, texts, until, -1 - i, explained, explain=True) for i in range(explain_clients)),
            *(_hostile(url, slow_kinds[i % len(slow_kinds)], until, held) for i in range(slow_clients)),
            *(_hostile(url, "idle", until, held) for _ in range(idle_clients)),
        )
        elapsed = time.perf_counter() - started
        after = await _health(session, url)
    latencies = sorted(took * 1000 for took, ok in results if ok)
    batches = after["batches"] - before["batches"]
    texts_run = after["batched_texts"] - before["batched_texts"]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "failed": sum(not ok for _, ok in results),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "rss_mb_start": before["rss_mb"],
        "rss_mb_end": after["rss_mb"],
        "rss_mb_max": max(memory, default=after["rss_mb"]),
        "mean_batch_texts": texts_run / batches if batches else 0.0,
        "health_p50_ms": statistics.median(health_ms) if health_ms else None,
        "slow_clients": slow_clients,
        "idle_clients": idle_clients,
        "hostile": _hostile_summary(held, seconds),
        "explain_clients": explain_clients,
        "explanations": sum(ok for _, ok in explained),
        "explain_refused": sum(not ok for _, ok in explained),
        "explain_p50_ms": statistics.median(sorted(t * 1000 for t, ok in explained if ok))
        if any(ok for _, ok in explained)
        else None,
    }


async def probe(url: str, seconds: float) -> list[dict]:
    """One connection of each `SLOW_KINDS` kind at once, each held at most `seconds`."""
    until = time.monotonic() + seconds
    return list(await asyncio.gather(*(hold(url, kind, until) for kind in SLOW_KINDS)))


def markdown(rows: list[dict]) -> str:
    header = ["concurrent clients", "slow, idle clients", "requests", "failed", "requests/s", "p50 ms", "p99 ms"]
    header += ["/health p50 ms", "mean batch", "server RSS MB: start, end (max)"]
    cells = []
    for r in rows:
        p50, p99, health = (
            f"{r[k]:.1f}" if r[k] is not None else "n/a (all failed)" for k in ("p50_ms", "p99_ms", "health_p50_ms")
        )
        memory = f"{r['rss_mb_start']:.0f}, {r['rss_mb_end']:.0f} ({r['rss_mb_max']:.0f})"
        counts = [str(r["concurrency"]), f"{r['slow_clients']}, {r['idle_clients']}", str(r["requests"])]
        counts += [str(r["failed"]), f"{r['requests_per_s']:.0f}"]
        cells.append([*counts, p50, p99, health, f"{r['mean_batch_texts']:.1f}", memory])
    table = markdown_table(header, cells)
    hostile = [(r["concurrency"], kind, h) for r in rows for kind, h in r["hostile"].items()]
    if hostile:
        header = ["concurrent clients", "hostile kind", "connections", "closed by the server", "longest held s"]
        cells = [
            [str(c), kind, str(h["connections"]), str(h["closed_by_server"]), f"{h['held_s_max']:.1f}"]
            + [", ".join(h["answers"]) or "none"]
            for c, kind, h in hostile
        ]
        table += "\n" + markdown_table([*header, "answers"], cells)
    explaining = [r for r in rows if r.get("explain_clients")]
    if explaining:
        header = ["concurrent clients", "explaining clients", "explanations", "refused (busy)", "explanation p50 ms"]
        cells = [
            [str(r["concurrency"]), str(r["explain_clients"]), str(r["explanations"]), str(r["explain_refused"])]
            + [f"{r['explain_p50_ms']:.0f}" if r["explain_p50_ms"] is not None else "n/a"]
            for r in explaining
        ]
        table += "\n" + markdown_table(header, cells)
    return table


def probe_markdown(held: list[dict]) -> str:
    cells = [[h["kind"], f"{h['held_s']:.1f}", "yes" if h["closed"] else "no", h["answer"] or "none"] for h in held]
    return markdown_table(["slow client", "held s", "closed by the server", "answer"], cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="start `emotion_lab.serve MODEL` here for the test")
    where.add_argument("--url", help="test a server that is already running")
    parser.add_argument("--backend", default="auto", help="with --model: the server's backend")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="with --model: the model's threads")
    parser.add_argument("--server-arg", action="append", default=[], help="with --model: passed on to the server")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64, 16], help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="per level (with --probe-only: the most to wait)")
    parser.add_argument("--slow-clients", type=int, default=0, help="clients at every level that send too slowly")
    parser.add_argument("--idle-clients", type=int, default=0, help="sockets at every level that send nothing")
    parser.add_argument(
        "--explain-clients",
        type=int,
        default=0,
        help="clients at every level asking for explanations back to back (prediction p50 with them running)",
    )
    parser.add_argument("--probe-only", action="store_true", help="only how long the server holds each slow client")
    parser.add_argument("--data-dir", default=None, help="a folder with test.txt (default: as training finds it)")
    parser.add_argument("--out", type=Path, default=Path("outputs/load_test"))
    args = parser.parse_args(argv)
    for name in ("slow_clients", "idle_clients", "explain_clients"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 0")
    if args.url and httpx.URL(args.url).host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--url {args.url}: a loopback address only (127.0.0.1, localhost, ::1); it floods its target")
    code = provenance()  # the code as it was when the measurement started

    texts = [] if args.probe_only else test_split(args.data_dir)[0]
    args.out.mkdir(parents=True, exist_ok=True)
    process, url = (None, args.url)
    if args.model:
        process, url = start_server(args.model, args.backend, args.threads, args.server_arg, args.out / "server.log")
    try:
        # A probed server may be any server (or a proxy), not necessarily this project's.
        model = {} if args.probe_only else httpx.get(f"{url}/model", timeout=10).json()
        if args.explain_clients:
            wait_for_explanations(url)
        held = asyncio.run(probe(url, args.seconds)) if args.probe_only else []
        rows = []
        for level in [] if args.probe_only else args.levels:
            row = run_level(url, texts, level, args.seconds, args.slow_clients, args.idle_clients, args.explain_clients)
            rows.append(asyncio.run(row))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    meta = run_record("load_test", argv, code, ("torch", "onnxruntime", "fastapi", "uvicorn", "aiohttp"))
    if args.probe_only:
        save_results(args.out, {"meta": meta | {"seconds": args.seconds}, "probe": held}, probe_markdown(held))
        return 0
    meta |= {"backend": model["backend"], "limits": model["limits"], "seconds_per_level": args.seconds}
    save_results(args.out, {"meta": meta, "rows": rows}, markdown(rows))
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
