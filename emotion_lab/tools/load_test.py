"""Load test of `emotion_lab.serve` at rising concurrency (a benchmark, not a test).

    python -m emotion_lab.tools.load_test --model MODEL [--backend onnx] [--levels 1 4 16 64 16] [--seconds 60]
    python -m emotion_lab.tools.load_test --url http://127.0.0.1:8000       # a server already running

At each concurrency level, that many clients (aiohttp, one process) each send one test sentence per
request, back to back, for `--seconds`; the table has requests/s, p50 / p99 latency, failed
requests, the mean batch the model ran, and the server's resident memory at the start and end of
the level (and its maximum, sampled from /health every second). Ending with a level already run
(`--levels 1 4 16 64 16`, the default) shows whether memory returns to a plateau or keeps climbing.
With `--model` the server is started here on a free port with the given backend and stopped
afterwards. Client and server share the machine: on few cores the client's own CPU use lowers what
the server gets. Writes results.md and results.json.
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

from emotion_lab.tools.bench import markdown_table, provenance, run_record, save_results, test_split
from emotion_lab.utils.config import PROJECT_ROOT


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


async def _client(session, url: str, texts: list[str], until: float, seed: int, out: list) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            async with session.post(f"{url}/predict", json={"text": rng.choice(texts)}) as response:
                ok = response.status == 200 and len((await response.json())["predictions"]) == 1
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
            ok = False
        out.append((time.perf_counter() - start, ok))


async def _health(session, url: str) -> dict:
    async with session.get(f"{url}/health") as response:
        return await response.json()


async def _memory(session, url: str, until: float, samples: list) -> None:
    while time.monotonic() < until:
        try:
            samples.append((await _health(session, url))["rss_mb"])
        except (aiohttp.ClientError, ValueError, KeyError):
            pass
        await asyncio.sleep(1.0)


async def run_level(url: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    results: list[tuple[float, bool]] = []
    memory: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        before = await _health(session, url)
        until = time.monotonic() + seconds
        started = time.perf_counter()
        await asyncio.gather(
            _memory(session, url, until, memory),
            *(_client(session, url, texts, until, seed, results) for seed in range(concurrency)),
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
    }


def markdown(rows: list[dict]) -> str:
    header = ["concurrent clients", "requests", "failed", "requests/s", "p50 ms", "p99 ms", "mean batch"]
    header += ["server RSS MB: start, end (max)"]
    cells = []
    for r in rows:
        p50, p99 = (f"{r[k]:.1f}" if r[k] is not None else "n/a (all failed)" for k in ("p50_ms", "p99_ms"))
        memory = f"{r['rss_mb_start']:.0f}, {r['rss_mb_end']:.0f} ({r['rss_mb_max']:.0f})"
        counts = [str(r["concurrency"]), str(r["requests"]), str(r["failed"]), f"{r['requests_per_s']:.0f}"]
        cells.append([*counts, p50, p99, f"{r['mean_batch_texts']:.1f}", memory])
    return markdown_table(header, cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="start `emotion_lab.serve MODEL` here for the test")
    where.add_argument("--url", help="test a server that is already running")
    parser.add_argument("--backend", default="auto", help="with --model: the server's backend")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="with --model: the model's threads")
    parser.add_argument("--server-arg", action="append", default=[], help="with --model: passed on to the server")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64, 16], help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="per level")
    parser.add_argument("--data-dir", default=None, help="a folder with test.txt (default: as training finds it)")
    parser.add_argument("--out", type=Path, default=Path("outputs/load_test"))
    args = parser.parse_args(argv)
    code = provenance()  # the code as it was when the measurement started

    texts, _, _ = test_split(args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    process, url = (None, args.url)
    if args.model:
        process, url = start_server(args.model, args.backend, args.threads, args.server_arg, args.out / "server.log")
    try:
        model = httpx.get(f"{url}/model", timeout=10).json()
        rows = []
        for level in args.levels:
            rows.append(asyncio.run(run_level(url, texts, level, args.seconds)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    meta = run_record("load_test", argv, code, ("torch", "onnxruntime", "fastapi", "uvicorn", "aiohttp"))
    meta |= {"backend": model["backend"], "limits": model["limits"], "seconds_per_level": args.seconds}
    save_results(args.out, {"meta": meta, "rows": rows}, markdown(rows))
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
