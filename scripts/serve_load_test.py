"""Load-test ``python -m src.serve`` from a second process on loopback; bounded in time and count.

For each setting (backend, batching on/off) it starts the server on a free 127.0.0.1 port, sends
warm-up requests, reads the memory of the server's processes, then runs ``--clients`` concurrent
keep-alive clients for ``--seconds`` (or ``--max-requests``, whichever ends first), each posting one
photo per request, reads the memory again and stops the server. One Markdown row per run:
requests/s, images/s, p50/p95/p99 latency, errors, memory before/after.

    python scripts/serve_load_test.py CKPT [--clients 32 128] [--seconds 30] [--backends torch onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BATCHING = {"on": ["max_batch_size=16", "batch_timeout=0.01"], "off": ["max_batch_size=1"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_memory_mb(pid: int) -> dict[str, float]:
    """Memory of a process and each of its children (HTTP and inference workers, LitServe's queue manager)
    in MB: proportional set sizes, so the pages forked processes share count once in their sum."""
    parent = psutil.Process(pid)
    return {f"{p.name()}[{p.pid}]": p.memory_full_info().pss / 2**20 for p in [parent, *parent.children(recursive=True)]}


def tree_memory_mb(pid: int) -> float:
    return sum(process_memory_mb(pid).values())


async def client(port: int, photos: list[bytes], stop_at: float, budget: list[int], latencies: list[float],
                 errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        i = 0
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 1
            photo = photos[i % len(photos)]
            i += 1
            started = time.monotonic()
            writer.write(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(photo), photo))
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.monotonic() - started)
            if status != 200:
                errors.append(str(status))
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
        errors.append(type(error).__name__)
    finally:
        writer.close()


async def load(port: int, photos: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    latencies, errors, budget = [], [], [max_requests]
    started = time.monotonic()
    await asyncio.gather(*(client(port, photos, started + seconds, budget, latencies, errors) for _ in range(clients)))
    elapsed = time.monotonic() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50": quantiles[49] * 1000, "p95": quantiles[94] * 1000, "p99": quantiles[98] * 1000, "errors": len(errors)}


def run_one(ckpt: str, backend: str, batching: str, clients: list[int], args, photos: list[bytes]) -> list[str]:
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="serve-load-"))
    log = (run_dir / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "src.serve", f"ckpt_path={ckpt}", f"port={port}", f"backend={backend}",
         f"hydra.run.dir={run_dir}", "log_level=warning", *BATCHING[batching]],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rows = []
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited; see {run_dir / 'server.log'}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /health in 300 s; see {run_dir / 'server.log'}")
            time.sleep(0.5)
        for count in clients:
            asyncio.run(load(port, photos, count, args.warmup, 20 * count))  # allocator pools, lazy inits
            before = tree_memory_mb(server.pid)
            for _ in range(args.repeat - 1):  # the same load again: memory that keeps growing grows per request
                result = asyncio.run(load(port, photos, count, args.seconds, args.max_requests))
                print(f"  after {result['requests']} requests: " + ", ".join(
                    f"{name} {mb:.0f}" for name, mb in process_memory_mb(server.pid).items()), flush=True)
            result = asyncio.run(load(port, photos, count, args.seconds, args.max_requests))
            after = tree_memory_mb(server.pid)
            rows.append(f"| {backend} | {batching} | {count} | {result['requests']} | {result['rps']:.0f} | "
                        f"{result['rps']:.0f} | {result['p50']:.0f} | {result['p95']:.0f} | {result['p99']:.0f} | "
                        f"{result['errors']} | {before:.0f} | {after:.0f} ({after - before:+.0f}) |")
            print(rows[-1], flush=True)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="the checkpoint to serve (the demo's best.ckpt)")
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop a run after this many requests")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load before `memory before`")
    parser.add_argument("--repeat", type=int, default=1, help="runs of --seconds per setting (memory after each)")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    parser.add_argument("--batching", nargs="+", default=["on", "off"])
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "fashion-mnist-sample")
    args = parser.parse_args()
    photos = [p.read_bytes() for p in sorted(args.photos.rglob("*.png"))[:200]]
    print(f"{len(photos)} photos of {args.photos}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| backend | batching | clients | requests | requests/s | images/s | p50 ms | p95 ms | p99 ms | errors "
          "| memory before MB | after MB (change) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend in args.backends:
        for batching in args.batching:
            run_one(args.ckpt, backend, batching, args.clients, args, photos)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
