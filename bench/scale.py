"""whyrec at production size: every stage on synthetic data of growing size, one
process per stage, wall time and peak RSS of each.

Sizes keep ML-20M's shape (about 144 interactions per user, 5.2 users per item):

    small    1,385 users  1,000 items      200,000 interactions   (more items: see SIZES)
    medium  13,850 users  2,675 items    2,000,000 interactions
    large  138,500 users 26,750 items   20,000,000 interactions   (ML-20M: 138,493 x 26,744)

Stages, each in its own child process (wall s, CPU s, peak RSS from ``os.wait4``):

1. ``synth``     — ``whyrec data synth`` writes the interaction log and item table;
2. ``prepare``   — ``whyrec data prepare`` (clean, filter, split, write the dataset);
3. ``embed``     — every item title through the packaged MiniLM encoder (no cache);
4. ``train``     — ``whyrec train --model sasrec --epochs E`` (**epochs capped**, default
   3: the figure is seconds per epoch, not a converged model; the loss is whatever the
   catalogue size picks, recorded in the table);
5. ``evaluate``  — ``whyrec evaluate`` full ranking of every user's test item;
6. ``popularity``— ``whyrec train --model popularity`` with its evaluation (the baseline
   SASRec's NDCG@10 is compared with);
7. ``serve``     — ``whyrec serve`` on the SASRec run (LLM off), startup until every
   user's top list is precomputed, then p50/p99 at 10 and 50 closed-loop clients for
   recommendations and for cached explanations (bench/serve_load.py's client);
8. ``llm``       — ``whyrec llm estimate`` for the preferences and explanations stages
   over every user, local model and an API price (gpt-4o-mini).

Each size's figures are kept in ``runs/bench-scale/<size>/stages.json``; the report
(docs/benchmarks.md "Scale", bench/results/scale.json) covers every size found there,
with the growth of each stage between sizes as a log-log slope against interactions
(1 = linear). Sizes can therefore be run one at a time.

    .venv/bin/python bench/scale.py --sizes tiny --no-write  # smoke test of the script
    .venv/bin/python bench/scale.py --sizes small            # minutes
    .venv/bin/python bench/scale.py --sizes medium           # tens of minutes
    .venv/bin/python bench/scale.py --sizes large            # hours: data, 3 epochs, serving
    .venv/bin/python bench/scale.py --report-only            # rewrite the report from disk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, write_result

WORK = ROOT / "runs" / "bench-scale"
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (300, 60, 9_000),  # a smoke test of the script itself, seconds per stage
    # no user meets an item twice and the generator caps a user at half the catalogue:
    # ML-20M's 5.2 users per item would leave 267 items for 144 interactions per user
    "small": (1_385, 1_000, 200_000),
    "medium": (13_850, 2_675, 2_000_000),
    "large": (138_500, 26_750, 20_000_000),
}
ORDER = ("synth", "prepare", "embed", "train", "evaluate", "popularity", "serve", "llm")
# the targets for the 20M size on 2 cores / 24 GB
TARGETS = {
    "prepare_s": 300.0,
    "epoch_s": 1200.0,
    "evaluate_s": 600.0,
    "peak_rss_mb": 12 * 1024.0,
    "p99_ms": 50.0,
}
SERVE_CLIENTS = (10, 50)
API_MODEL = "gpt-4o-mini"


class StageFailed(RuntimeError):
    pass


# ----------------------------------------------------------------------- running


def whyrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "whyrec.cli", *args]


def shown(cmd: list[str]) -> str:
    """The command as a user would type it."""
    if cmd[:3] == [sys.executable, "-m", "whyrec.cli"]:
        cmd = ["whyrec", *cmd[3:]]
    elif cmd[0] == sys.executable:
        cmd = [".venv/bin/python", *cmd[1:]]
    return shlex.join(str(c).replace(str(ROOT) + "/", "") for c in cmd)


def run_stage(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` to completion; its wall time, CPU time and peak RSS (its own and its
    waited-for descendants', from ``wait4``)."""
    print(f"[{name}] {shown(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise StageFailed(f"stage {name} exited with {proc.returncode}; log {log}:\n{tail}")
    row = {
        "stage": name,
        "command": shown(cmd),
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    print(
        f"[{name}] {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, "
        f"{row['peak_rss_mb']:.0f} MB peak RSS",
        file=sys.stderr,
        flush=True,
    )
    return row


def last_json(log: Path) -> Any:
    """The JSON document a child printed last (a stage's figures)."""
    text = log.read_text()
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else text.find("{") :])


# ----------------------------------------------------------- stages run as children


def child_embed(data: Path) -> None:
    """Encode every item's title with the packaged encoder, no cache."""
    from whyrec.data import load_dataset
    from whyrec.embed import encoder_from_config

    ds = load_dataset(data)
    texts = ds.item_texts([])
    enc = encoder_from_config(None, cache=False)
    t0 = time.perf_counter()
    vecs = enc.encode(texts, progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"texts": len(texts), "dim": int(vecs.shape[1]), "encode_s": seconds}))


def child_serve(run: Path, users: int, duration: float, warmup: float) -> None:
    """bench/serve_load.py's server and client on ``run``: startup, then p50/p99."""
    import serve_load as sl

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="whyrec-scale-serve-") as tmp:
        log = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        proc = sl.start_server(run, Path(tmp) / "serve.sqlite", port, server_cpu, None, log)
        base = f"http://127.0.0.1:{port}"
        out: dict[str, Any] = {"server_cpu": server_cpu, "client_cpu": client_cpu}
        try:
            health = sl.wait_ready(proc, base, log, timeout=4 * 3600)
            out["startup_s"] = round(time.perf_counter() - t0, 2)
            out["users_precomputed"] = health["precomputed_users"]
            ids = [u["user"] for u in sl.get_json(f"{base}/v1/users?limit={users}", {})["users"]]
            plain = [f"/v1/users/{u}/recommendations?k=10" for u in ids]
            explained = [p + "&explain=true" for p in plain]
            for p in explained + explained + plain:  # fill the explanation cache
                sl.get_json(base + p, {}, timeout=300)
            headers = "Accept: application/json\r\n"
            for name, paths, check in (
                ("recommendations", plain, b'"items":['),
                ("cached_explanations", explained, b'"explanation":{'),
            ):
                out[name] = []
                for c in SERVE_CLIENTS:
                    res = asyncio.run(
                        sl.run_level("127.0.0.1", port, paths, c, duration, warmup, headers, check)
                    )
                    res.pop("total_requests", None)
                    out[name].append(res)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            out["server_peak_rss_mb"] = round(int(hwm.split()[1]) / 1024, 1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(json.dumps(out))


# -------------------------------------------------------------------- one size


def run_size(size: str, epochs: int, keep: bool, serve_duration: float) -> dict[str, Any]:
    users, items, interactions = SIZES[size]
    work = WORK / size
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    raw, data, sasrec, pop = work / "raw", work / "data", work / "sasrec", work / "popularity"
    name = f"synth-{size}"
    stages: dict[str, dict[str, Any]] = {}
    t_all = time.perf_counter()

    def stage(key: str, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        stages[key] = run_stage(key, cmd, logs / f"{key}.log", env)
        return stages[key]

    if not (raw / "interactions.parquet").is_file():
        shutil.rmtree(raw, ignore_errors=True)
        stage(
            "synth",
            whyrec(
                "data", "synth", "--users", str(users), "--items", str(items),
                "--interactions", str(interactions), "--seed", "0", "--out", str(raw),
            ),
        )  # fmt: skip
    shutil.rmtree(data, ignore_errors=True)
    stage(
        "prepare",
        whyrec(
            "data", "prepare", str(raw / "interactions.parquet"), "--format", "table",
            "--items", str(raw / "items.parquet"), "--rating-col", "rating",
            "--text-col", "genres", "--name", name, "--out", str(data),
        ),
    )  # fmt: skip
    counts = json.loads((data / "manifest.json").read_text()).get("counts", {})
    s = stage("embed", [sys.executable, __file__, "--child", "embed", "--path", str(data)])
    s.update(last_json(logs / "embed.log"))

    shutil.rmtree(sasrec, ignore_errors=True)
    s = stage(
        "train",
        whyrec(
            "train", "--model", "sasrec", "--data", str(data), "--out", str(sasrec),
            "--epochs", str(epochs), "--no-evaluate",
        ),
    )  # fmt: skip
    training = json.loads((sasrec / "training.json").read_text())
    cfg = json.loads((sasrec / "manifest.json").read_text())["config"]
    s.update(
        {
            "epochs_run": training["epochs_run"],
            "epochs_cap": epochs,
            "s_per_epoch": training["seconds_per_epoch"],
            "loss": training.get("loss", cfg.get("loss")),
            "loss_choice": training.get("loss_choice"),
            "max_len": cfg.get("max_len"),
            "batch_size": cfg.get("batch_size"),
            "train_windows": training.get("train_windows"),
            "valid_users": training.get("valid_users"),
            "valid_ndcg10": training.get("valid_ndcg10"),
            "threads": training.get("threads"),
        }
    )
    s = stage(
        "evaluate",
        whyrec("evaluate", str(sasrec), "--protocol", "full", "--format", "json"),
    )
    report = json.loads((sasrec / "evaluation.json").read_text())
    full = next(r for r in report["results"] if r["protocol"] == "full")
    s.update({"users": full["n_users"], "ndcg10": full["metrics"]["NDCG@10"]})

    shutil.rmtree(pop, ignore_errors=True)
    s = stage(
        "popularity",
        whyrec("train", "--model", "popularity", "--data", str(data), "--out", str(pop)),
    )
    preport = json.loads((pop / "evaluation.json").read_text())
    pfull = next(r for r in preport["results"] if r["protocol"] == "full")
    s["ndcg10"] = pfull["metrics"]["NDCG@10"]

    s = stage(
        "serve",
        [
            sys.executable, __file__, "--child", "serve", "--path", str(sasrec),
            "--serve-duration", str(serve_duration),
        ],
    )  # fmt: skip
    s.update(last_json(logs / "serve.log"))

    n_users = int(counts.get("users") or users)
    llm: dict[str, Any] = {}
    t0 = time.perf_counter()
    for stage_name in ("preferences", "explanations"):
        for label, extra in (
            ("local", []),
            (API_MODEL, ["--backend", "openai", "--model", API_MODEL]),
        ):
            cmd = whyrec(
                "llm", "estimate", "--stage", stage_name, "--users", str(n_users), "--json", *extra
            )
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            est = json.loads(done.stdout)
            llm[f"{stage_name}/{label}"] = {
                "command": shown(cmd),
                "model": est["model"],
                "calls": est["calls"],
                "total_tokens": est["total_tokens"],
                "hours": round(est["seconds"] / 3600, 2),
                "cost_usd": round(est["cost_usd"], 2),
                "concurrency": est["concurrency"],
                "throughput_source": est["throughput"]["source"],
            }
    stages["llm"] = {"stage": "llm", "wall_s": round(time.perf_counter() - t0, 2), "estimates": llm}

    result = {
        "size": size,
        "requested": {"users": users, "items": items, "interactions": interactions},
        "counts": counts,
        "stages": stages,
        "total_wall_s": round(time.perf_counter() - t_all, 1),
        "command": f".venv/bin/python bench/scale.py --sizes {size} --epochs {epochs}",
        "machine": machine(),
        "load_after": os.getloadavg()[0],
    }
    (work / "stages.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --------------------------------------------------------------------- the report


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than 2 points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def metric_rows(res: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """Per stage: (the time figure that should grow at most linearly, peak RSS MB)."""
    st = res["stages"]
    out: dict[str, tuple[float | None, float | None]] = {}
    for key in ORDER:
        if key not in st or key == "llm":
            continue
        s = st[key]
        wall = s.get("s_per_epoch") if key == "train" else s.get("wall_s")
        if key == "serve":
            wall = s.get("startup_s")
        out[key] = (wall, s.get("peak_rss_mb"))
    return out


def fmt_n(x: Any) -> str:
    return f"{int(x):,}" if isinstance(x, int | float) else "—"


def markdown(results: list[dict[str, Any]], cmds: list[str]) -> str:
    results = sorted(results, key=lambda r: r["requested"]["interactions"])
    lines = [
        "## Scale",
        "",
        "Synthetic data from `whyrec data synth` at ML-20M's shape (about 144 interactions "
        "per user, 5.2 users per item), each stage in its own process; wall seconds / peak "
        "RSS (MB) of that process and its children. `train` is seconds per epoch with the "
        "**epochs capped** (see the cap per size), the loss chosen by catalogue size; "
        "`serve` is the time until every user's top list is precomputed and the server's "
        "own peak RSS.",
        "",
    ]
    head = "| stage | " + " | ".join(
        f"{r['size']}: {fmt_n(r['counts'].get('users'))} users × "
        f"{fmt_n(r['counts'].get('items'))} items × {fmt_n(r['counts'].get('actions'))}"
        for r in results
    )
    lines += [
        head + " | slope, time | slope, RSS |",
        "|---|" + "---:|" * (len(results) + 2),
    ]
    xs = [float(r["counts"].get("actions") or r["requested"]["interactions"]) for r in results]
    per = [metric_rows(r) for r in results]
    flagged = []
    for key in ORDER:
        if key == "llm" or not any(key in p for p in per):
            continue
        cells = []
        for p, r in zip(per, results, strict=True):
            wall, rss = p.get(key, (None, None))
            if key == "serve" and key in r["stages"]:
                rss = r["stages"]["serve"].get("server_peak_rss_mb", rss)
            cells.append(
                "—"
                if wall is None
                else f"{wall:,.1f} s / {rss:,.0f} MB"
                if rss
                else f"{wall:,.1f} s"
            )
        ws = [p.get(key, (None, None))[0] for p in per]
        rs = [p.get(key, (None, None))[1] for p in per]
        pairs_w = [(x, w) for x, w in zip(xs, ws, strict=True) if w]
        pairs_r = [(x, m) for x, m in zip(xs, rs, strict=True) if m]
        sw = slope([a for a, _ in pairs_w], [b for _, b in pairs_w]) if len(pairs_w) > 1 else None
        sr = slope([a for a, _ in pairs_r], [b for _, b in pairs_r]) if len(pairs_r) > 1 else None
        if sw is not None and sw > 1.15:
            flagged.append(f"{key} time (slope {sw:.2f})")
        lines.append(
            f"| {key} | " + " | ".join(cells) + f" | {'—' if sw is None else f'{sw:.2f}'} "
            f"| {'—' if sr is None else f'{sr:.2f}'} |"
        )
    lines += ["", "Per size:", ""]
    for r in results:
        st = r["stages"]
        tr, ev, pop, sv = (st.get(k, {}) for k in ("train", "evaluate", "popularity", "serve"))
        bits = [
            f"**{r['size']}** ({r['machine']['date']}, commit {r['machine']['commit']}, "
            f"total {r['total_wall_s']:,.0f} s):",
            f"SASRec {tr.get('epochs_run')} epoch(s) of at most {tr.get('epochs_cap')}, loss "
            f"`{tr.get('loss')}` ({tr.get('loss_choice')}), max_len {tr.get('max_len')}, "
            f"{fmt_n(tr.get('train_windows'))} training windows"
            + (
                f" ({math.ceil(tr['train_windows'] / tr['batch_size']):,} optimiser steps per "
                "epoch)"
                if tr.get("train_windows") and tr.get("batch_size")
                else ""
            )
            + ", validation on "
            f"{fmt_n(tr.get('valid_users'))} users, {tr.get('threads')} threads;",
            f"full-ranking NDCG@10 over {fmt_n(ev.get('users'))} users: SASRec "
            f"{ev.get('ndcg10', float('nan')):.4f} vs popularity "
            f"{pop.get('ndcg10', float('nan')):.4f} (after the capped epochs);",
            f"title embedding {st.get('embed', {}).get('texts', 0):,} titles in "
            f"{st.get('embed', {}).get('encode_s', float('nan')):.1f} s.",
        ]
        lines.append(" ".join(bits))
        if sv.get("recommendations"):
            parts = []
            for name in ("recommendations", "cached_explanations"):
                for lvl in sv.get(name, []):
                    parts.append(
                        f"{name.replace('_', ' ')} at {lvl['clients']} clients: p50 "
                        f"{lvl['p50_ms']:.1f} ms, p99 {lvl['p99_ms']:.1f} ms, "
                        f"{lvl['throughput_rps']:.0f} req/s, {lvl['errors']} errors"
                    )
            lines += [
                "",
                "Serving (server pinned to one core, client to the other): "
                + "; ".join(parts)
                + ".",
            ]
        est = st.get("llm", {}).get("estimates", {})
        if est:
            lines += [
                "",
                "| LLM stage (every user) | model | calls | tokens | hours | USD |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for key, e in est.items():
                lines.append(
                    f"| {key.split('/')[0]} | {e['model']} | {e['calls']:,} | "
                    f"{e['total_tokens']:,} | {e['hours']:,.1f} | {e['cost_usd']:,.2f} |"
                )
        lines.append("")
    big = results[-1]
    st = big["stages"]
    peak = max((s.get("peak_rss_mb") or 0) for k, s in st.items() if k != "llm")
    serve = st.get("serve", {})
    p99 = max(
        (
            lvl["p99_ms"]
            for n in ("recommendations", "cached_explanations")
            for lvl in serve.get(n, [])
        ),
        default=float("nan"),
    )
    checks = [
        ("prepare ≤ 5 min", st.get("prepare", {}).get("wall_s"), TARGETS["prepare_s"]),
        ("one SASRec epoch ≤ 20 min", st.get("train", {}).get("s_per_epoch"), TARGETS["epoch_s"]),
        ("evaluating all users ≤ 10 min", st.get("evaluate", {}).get("wall_s"),
         TARGETS["evaluate_s"]),
        ("no stage above 12 GB peak RSS", peak, TARGETS["peak_rss_mb"]),
        ("serving p99 < 50 ms at 50 clients", p99, TARGETS["p99_ms"]),
    ]  # fmt: skip
    lines += [
        f"Targets (set for the 20M size; checked here at the largest size run, **{big['size']}**):",
        "",
    ]
    for label, value, limit in checks:
        ok = value is not None and not math.isnan(value) and value <= limit
        unit = " MB" if "RSS" in label else " ms" if "p99" in label else " s"
        value_text = "—" if value is None else f"{value:,.1f}{unit}"
        lines.append(f"- {label}: {value_text} — {'met' if ok else 'NOT met'}")
    sas, pop = st.get("evaluate", {}).get("ndcg10"), st.get("popularity", {}).get("ndcg10")
    if sas is not None and pop:
        ratio = sas / pop
        lines.append(
            f"- SASRec ≥ 2× popularity NDCG@10 (full ranking, every user): {sas:.4f} vs "
            f"{pop:.4f} = {ratio:.1f}× — {'met' if ratio >= 2 else 'NOT met'}"
        )
    lines += [
        "",
        "Grows faster than linear (slope above 1.15): "
        + (", ".join(flagged) if flagged else "none measured")
        + ".",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in cmds),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small", help=f"comma-separated: {', '.join(SIZES)}")
    ap.add_argument("--epochs", type=int, default=3, help="SASRec epoch cap")
    ap.add_argument("--serve-duration", type=float, default=6.0, help="measured s per level")
    ap.add_argument("--keep-data", action="store_true", help="reuse synthesised files")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from disk")
    ap.add_argument("--no-write", action="store_true", help="print, do not update docs")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "embed":
        child_embed(args.path)
        return
    if args.child == "serve":
        child_serve(args.path, users=100, duration=args.serve_duration, warmup=1.0)
        return
    if not args.report_only:
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        unknown = sorted(set(sizes) - set(SIZES))
        if unknown:
            raise SystemExit(f"unknown sizes {unknown}; known: {list(SIZES)}")
        for size in sizes:
            run_size(size, args.epochs, args.keep_data, args.serve_duration)
    results = [
        json.loads((WORK / s / "stages.json").read_text())
        for s in SIZES
        if (WORK / s / "stages.json").is_file()
    ]
    if any(r["size"] != "tiny" for r in results):  # the smoke size is not a figure
        results = [r for r in results if r["size"] != "tiny"]
    if not results:
        raise SystemExit(f"no results under {WORK}: run a size first")
    cmds = [r["command"] for r in results]
    md = markdown(results, cmds)
    print(md)
    if not args.no_write:
        write_result("scale", {"sizes": results, "targets": TARGETS}, md)


if __name__ == "__main__":
    main()
