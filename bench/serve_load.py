"""Load figures for ``whyrec serve``: throughput and p50/p99 latency on loopback.

Starts a real server (``python -m whyrec.cli serve RUN``, one uvicorn process, LLM off so
no background generation competes for the CPU), waits until every user's top list is
precomputed, warms the explanation cache for the sampled users, then runs closed-loop
keep-alive HTTP/1.1 clients (raw asyncio sockets: the client adds little overhead) at
each concurrency level for two endpoints:

* ``GET /v1/users/{u}/recommendations?k=K`` — recommendations without explanations;
* ``GET /v1/users/{u}/recommendations?k=K&explain=true`` — with cached explanations
  (reason, weights and attribution for each of the K items, from the cache).

The default run is LANE on MovieLens-100k (built once into runs/bench-serve/lane with
grounded fallback preferences, 5 epochs: serving cost does not depend on how well it was
trained). On a machine with 2+ CPUs the server is pinned to one CPU and the client to
another (``--server-cpu`` / ``--client-cpu``).

    .venv/bin/python bench/serve_load.py                 # ~1-2 minutes once the run exists
    .venv/bin/python bench/serve_load.py --quick         # smoke test, no results written
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, write_result

DEFAULT_RUN = ROOT / "runs" / "bench-serve" / "lane"
TARGET_P99_MS = 50.0


# --------------------------------------------------------------------------- the run


def build_default_run(path: Path) -> None:
    """LANE on MovieLens-100k with grounded preferences (no LLM), a few epochs."""
    from whyrec.data import load_dataset
    from whyrec.embed import get_encoder
    from whyrec.explain.pipeline import extract_preferences, train_lane

    print(f"building the benchmark run in {path} (once)", file=sys.stderr)
    ds = load_dataset("movielens-100k")
    pset = extract_preferences(
        ds, client=None, encoder=get_encoder(), llm_users=0, progress=True,
        store=path.parent / "preferences.sqlite",
    )  # fmt: skip
    train_lane(ds, pset, out=path, progress=True, epochs=5)


# ------------------------------------------------------------------------- the server


def start_server(
    run: Path,
    store: Path,
    port: int,
    cpu: int | None,
    api_key: str | None,
    log: Path,
    store_url: str | None = None,
) -> subprocess.Popen:
    """``whyrec serve`` on ``run``: a SQLite ``store``, or the PostgreSQL ``store_url``
    (given through the environment, so no password shows in the process list)."""
    env = {**os.environ, "WHYREC_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if api_key:
        env["WHYREC_SERVE_API_KEYS"] = api_key
    store_args = ["--store", str(store)]
    if store_url:
        env["WHYREC_SERVE_STORE_URL"] = store_url
        store_args = []
    cmd = [
        sys.executable, "-m", "whyrec.cli", "serve", str(run), "--port", str(port),
        *store_args, "--no-llm", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return subprocess.Popen(
        cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, preexec_fn=pin
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def get_json(url: str, headers: dict[str, str], timeout: float = 60) -> Any:
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(proc: subprocess.Popen, base: str, log: Path, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            h = get_json(base + "/health", {}, timeout=2)
            if h["precomputed_users"] >= h["model"]["users"]:
                return h
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server not ready in time")
        time.sleep(0.3)


# ------------------------------------------------------------------------- the client


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, headers: str) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("response without Content-Length")
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_level(
    host: str,
    port: int,
    paths: list[str],
    clients: int,
    duration: float,
    warmup: float,
    headers: str,
    check: bytes | None,
) -> dict[str, Any]:
    """``clients`` closed-loop connections for ``warmup + duration`` seconds."""
    latencies: list[float] = []
    errors = {"status": 0, "exception": 0, "body": 0}
    total = [0]
    t_start = time.perf_counter()
    measure_from = t_start + warmup
    stop_at = measure_from + duration

    async def one(c: int) -> None:
        conn = Conn(host, port, headers)
        await conn.open()
        i = c * 7919
        try:
            while True:
                path = paths[i % len(paths)]
                i += 1
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    status, body = await conn.get(path)
                except (OSError, RuntimeError, asyncio.IncompleteReadError):
                    if t0 >= measure_from:
                        errors["exception"] += 1
                    conn.close()
                    await conn.open()
                    continue
                t1 = time.perf_counter()
                total[0] += 1
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    if status != 200:
                        errors["status"] += 1
                    elif check is not None and check not in body:
                        errors["body"] += 1
        finally:
            conn.close()

    await asyncio.gather(*(one(c) for c in range(clients)))
    lat_ms = sorted(x * 1000 for x in latencies)
    n = len(lat_ms)

    def pct(p: float) -> float:
        return round(lat_ms[min(n - 1, int(p * n))], 2) if n else float("nan")

    return {
        "clients": clients,
        "requests": n,
        "seconds": duration,
        "throughput_rps": round(n / duration, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat_ms[-1], 2) if n else float("nan"),
        "mean_ms": round(statistics.fmean(lat_ms), 2) if n else float("nan"),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "total_requests": total[0],
    }


# --------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None, help=f"run directory (default {DEFAULT_RUN})")
    ap.add_argument("--users", type=int, default=100, help="users the requests cycle over")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--duration", type=float, default=6.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per level")
    ap.add_argument("--server-cpu", type=int, default=None, help="pin the server to this CPU")
    ap.add_argument("--client-cpu", type=int, default=None, help="pin the client to this CPU")
    ap.add_argument("--auth", action="store_true", help="require and send a bearer key")
    ap.add_argument(
        "--store-url",
        default=None,
        help="serve from this PostgreSQL database (replica mode: reads without a consistency "
        "token come from memory kept current by LISTEN/NOTIFY; WHYREC_SERVE_READ_CONSISTENCY="
        "strict makes every read wait for a round trip); results go to serve_load_postgres",
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: short, nothing written")
    ap.add_argument(
        "--result-name",
        default=None,
        help="name of the results (bench/results/NAME.json and its docs section); default "
        "serve_load, or serve_load_postgres with --store-url (e.g. serve_load_implicit for an "
        "outside model's run)",
    )
    args = ap.parse_args()
    if args.quick:
        args.users, args.duration, args.warmup = min(args.users, 10), 1.0, 0.3
    ncpu = len(os.sched_getaffinity(0))
    if args.server_cpu is None and args.client_cpu is None and ncpu >= 2 and not args.quick:
        cpus = sorted(os.sched_getaffinity(0))
        args.server_cpu, args.client_cpu = cpus[-1], cpus[0]
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})

    run = args.run or DEFAULT_RUN
    if not (run / "manifest.json").is_file():
        if args.run is not None:
            raise SystemExit(f"{run} is not a trained run (manifest.json missing)")
        build_default_run(run)
    manifest = json.loads((run / "manifest.json").read_text())

    with tempfile.TemporaryDirectory(prefix="whyrec-serve-bench-") as tmp:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        key = "bench-key" if args.auth else None
        log = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        proc = start_server(
            run, Path(tmp) / "serve.sqlite", port, args.server_cpu, key, log, args.store_url
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, base, log)
            startup_s = time.perf_counter() - t0
            auth = {"Authorization": f"Bearer {key}"} if key else {}
            users = [
                u["user"] for u in get_json(f"{base}/v1/users?limit={args.users}", auth)["users"]
            ]
            plain = [f"/v1/users/{u}/recommendations?k={args.k}" for u in users]
            explained = [p + "&explain=true" for p in plain]
            # warm: compute every explanation once (templates: LLM off), then once more so
            # whole responses are cached, exactly as repeated production traffic would
            t_warm = time.perf_counter()
            for p in explained + explained + plain:
                get_json(base + p, auth, timeout=120)
            warm_s = time.perf_counter() - t_warm
            sample = get_json(base + explained[0], auth)
            assert all(it["explanation"]["cache"] == "memory" for it in sample["items"])
            header_lines = "".join(f"{k}: {v}\r\n" for k, v in auth.items())
            header_lines += "Accept: application/json\r\n"
            results: dict[str, list[dict[str, Any]]] = {}
            for name, paths, check in (
                ("recommendations", plain, b'"items":['),
                ("cached_explanations", explained, b'"explanation":{'),
            ):
                results[name] = []
                for c in args.clients:
                    cpu0 = cpu_seconds(proc.pid)
                    res = asyncio.run(
                        run_level(
                            "127.0.0.1", port, paths, c, args.duration, args.warmup,
                            header_lines, check,
                        )
                    )  # fmt: skip
                    # server CPU per request (warm-up requests included in both counts)
                    total = res.pop("total_requests")
                    cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000
                    res["server_cpu_ms_per_request"] = round(cpu_ms / max(total, 1), 3)
                    results[name].append(res)
                    print(
                        f"{name:20s} {c:3d} clients: {res['throughput_rps']:8.1f} req/s  "
                        f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                        f"errors {res['errors']}  server CPU "
                        f"{res['server_cpu_ms_per_request']:.3f} ms/req",
                        file=sys.stderr,
                    )
            final_health = get_json(base + "/health", {})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    payload = {
        "run": str(run),
        "model": manifest["model"],
        "adapter": manifest.get("adapter"),
        "model_config": {k: manifest["config"].get(k) for k in ("dim", "max_len", "n_preferences")},
        "dataset": manifest["dataset"].get("name"),
        "users_cycled": len(users),
        "k": args.k,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "auth": bool(args.auth),
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "startup_s": round(startup_s, 1),
        "warm_s": round(warm_s, 1),
        "duration_s": args.duration,
        "target_p99_ms": TARGET_P99_MS,
        "results": results,
        "server_health": {"llm": final_health["llm"]["state"], "model": final_health["model"]},
        "store": final_health.get("store", {}).get("backend", "sqlite"),
        "read_consistency": os.environ.get("WHYREC_SERVE_READ_CONSISTENCY", "session")
        if args.store_url
        else None,
    }
    top = {name: rows[-1] for name, rows in results.items()}
    payload["target_met_at_max_clients"] = all(
        r["p99_ms"] < TARGET_P99_MS and r["errors"] == 0 for r in top.values()
    )
    if args.quick:  # smoke test: show what would be written, write nothing
        print(markdown(payload))
        return
    name = args.result_name or ("serve_load_postgres" if args.store_url else "serve_load")
    write_result(name, payload, markdown(payload))


def markdown(p: dict[str, Any]) -> str:
    pin = (
        f"server pinned to CPU {p['server_cpu']}, client to CPU {p['client_cpu']}"
        if p["server_cpu"] is not None
        else "no CPU pinning"
    )
    on_pg = p.get("store") == "postgresql"
    lines = [
        "## Online service: load on loopback (`whyrec serve`"
        + (", PostgreSQL store)" if on_pg else ")")
        + (f" on an outside model ({p['adapter']})" if p.get("adapter") else ""),
        "",
        *(
            [
                "The same load with the store on a local PostgreSQL server (a throwaway "
                "cluster from `scripts/ensure_postgres.sh start`, on the same 2 cores as server "
                "and client): replica mode, LISTEN/NOTIFY keeping users' posted interactions "
                "in memory, only final explanation records memory hits; "
                + (
                    'with `read_consistency = "strict"` each batch of requests waits for one '
                    "shared round trip to the database."
                    if p.get("read_consistency") == "strict"
                    else 'with `read_consistency = "session"` (the default) reads without a '
                    "consistency token, as here, are answered from memory at once."
                ),
                "",
            ]
            if on_pg
            else []
        ),
        f"One `whyrec serve` process (uvicorn, {p['uvicorn_http']} parser, {p['uvicorn_loop']} "
        f"loop, LLM off) serving {p['model']} on {p['dataset']} "
        + (
            f"(dim {p['model_config']['dim']}, max_len {p['model_config']['max_len']}); "
            if p["model_config"].get("dim") is not None
            else f"(outside model, adapter {p.get('adapter')}); "
        )
        + f"closed-loop keep-alive clients, requests cycling over {p['users_cycled']} users, "
        f"k = {p['k']}, {p['duration_s']:g} s measured per level after a warm-up; {pin}"
        + ("; bearer-token auth on" if p["auth"] else "")
        + ". Cached explanations: every item's reason, weights and attribution served from "
        "the cache (warmed first; template reasons, as the LLM is off — an LLM-written "
        f"cached reason is served by the same path). Start-up incl. precompute "
        f"{p['startup_s']} s; warming {p['warm_s']} s.",
        "",
        "| endpoint | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "recommendations": "recommendations, no explanations",
        "cached_explanations": "recommendations + cached explanations",
    }
    for name, rows in p["results"].items():
        for r in rows:
            lines.append(
                f"| {labels[name]} | {r['clients']} | {r['throughput_rps']:.0f} | "
                f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['max_ms']:.2f} | {r['errors']} | {r['server_cpu_ms_per_request']:.3f} |"
            )
    verdict = "met" if p["target_met_at_max_clients"] else "NOT met"
    lines += [
        "",
        f"Target: p99 < {p['target_p99_ms']:.0f} ms for both cached paths at the highest "
        f"client count with zero errors — **{verdict}**.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
