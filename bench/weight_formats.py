"""Speed and quality of the packaged SmolLM2 GGUF re-encoded into other weight formats
(the LLM setting ``weights``): which format batches well on a CPU, and what it costs.

For each format (``file`` = the packaged Q4_1 as stored; the others converted once by
``whyrec.llm.backends.local.converted_model_path``):

* prompt processing: milliseconds per token for one 512-token chunk (best of 3);
* decoding: milliseconds per ``llama_decode`` call carrying 1 and ``--batch`` sequences
  (``BatchedLocalBackend``, greedy, no grammar, ``--tokens`` tokens each; median over
  the calls that carried exactly that many sequences);
* quality: perplexity on a fixed English text (README.md + docs/lane.md, first 2,000
  tokens) and next-token top-1 agreement / KL divergence against ``file``.

Usage: .venv/bin/python bench/weight_formats.py [--threads 1]
       [--formats file f16 q8_0 q4_k_m iq4_nl q4_0] [--batch 8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _report import write_result
from whyrec.llm import LLMSettings
from whyrec.llm.backends import Decoding
from whyrec.llm.backends.batched import BatchedLocalBackend
from whyrec.llm.backends.local import LocalBackend

ROOT = Path(__file__).resolve().parents[1]


def prompt_ms_per_token(llama: Any, n: int = 512) -> float:
    toks = llama.tokenize(("The quick brown fox jumps over the lazy dog. " * 80).encode())[:n]
    best = float("inf")
    for _ in range(3):
        llama.reset()
        t = time.perf_counter()
        llama.eval(toks)
        best = min(best, time.perf_counter() - t)
    return best / len(toks) * 1000


def _median_step_ms(settings: LLMSettings, local: LocalBackend, p: int, tokens: int) -> float:
    """Median ms of the decode calls that carried exactly ``p`` sequences."""
    import llama_cpp

    backend = BatchedLocalBackend(settings, n_parallel=p, local=local)
    engine = backend.engine
    sizes: dict[int, list[float]] = {}
    decode = llama_cpp.llama_decode

    def timed(ctx: Any, b: Any) -> int:
        t = time.perf_counter()
        rc = decode(ctx, b)
        sizes.setdefault(int(b.n_tokens), []).append(time.perf_counter() - t)
        return rc

    class _Timed:  # the engine calls llama.cpp through this module-like object
        def __getattr__(self, name: str) -> Any:
            return timed if name == "llama_decode" else getattr(llama_cpp, name)

    engine._lc = _Timed()
    msgs = [
        [{"role": "user", "content": f"Write a long story about a dog called Dog{i}."}]
        for i in range(p)
    ]

    def one(m: list[dict]) -> Any:
        return backend.generate(m, Decoding(max_tokens=tokens, temperature=0.0, seed=0))

    try:
        with ThreadPoolExecutor(len(msgs)) as pool:
            list(pool.map(one, msgs))
    finally:
        backend.close()
    return round(statistics.median(sizes[p]) * 1000, 2) if p in sizes else float("nan")


def decode_step_ms(settings: LLMSettings, local: LocalBackend, batch: int, tokens: int) -> dict:
    """Median ms per decode call carrying 1 and ``batch`` sequences."""
    return {p: _median_step_ms(settings, local, p, tokens) for p in (1, batch)}


def quality(
    paths: dict[str, Path], threads: int, text: str | None = None, n_tokens: int = 2000
) -> dict:
    """Perplexity of each model file on ``text`` (default: README.md + docs/lane.md) and,
    from the second on, next-token top-1 agreement and KL divergence against the first."""
    from llama_cpp import Llama

    if text is None:
        text = (ROOT / "README.md").read_text()[:6000]
        text += (ROOT / "docs" / "lane.md").read_text()[:3000]
    res: dict[str, dict] = {}
    ref: tuple[np.ndarray, np.ndarray] | None = None
    for name, path in paths.items():
        llama = Llama(
            model_path=str(path), n_ctx=n_tokens + 16, n_batch=512, n_threads=threads,
            logits_all=True, verbose=False,
        )  # fmt: skip
        toks = llama.tokenize(text.encode())[:n_tokens]
        llama.eval(toks)
        logits = np.asarray(llama.scores[: len(toks)], dtype=np.float64)
        llama.close()
        logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        row: dict[str, Any] = {
            "tokens": len(toks),
            "perplexity": round(float(np.exp(-logp[np.arange(len(toks) - 1), toks[1:]].mean())), 2),
        }
        top = logits.argmax(1)
        if ref is None:
            ref = (logp, top)
        else:
            row["top1_agreement"] = round(float(np.mean(top == ref[1])), 3)
            row["kl_from_file"] = round(float((np.exp(ref[0]) * (ref[0] - logp)).sum(1).mean()), 4)
        res[name] = row
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--formats", nargs="+", default=["file", "f16", "q8_0", "q4_k_m", "iq4_nl", "q4_0"]
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    if args.formats[0] != "file":
        raise SystemExit("the first format must be 'file' (the reference)")

    rows: list[dict[str, Any]] = []
    paths: dict[str, Path] = {}
    for fmt in args.formats:
        settings = LLMSettings(
            backend="local", n_threads=args.threads, n_ctx=1024, cache=False, weights=fmt
        )
        local = LocalBackend(settings)
        t = time.perf_counter()
        llama = local.llama  # converts on first use (cached afterwards)
        load_s = time.perf_counter() - t
        paths[fmt] = local.loaded_path
        steps = decode_step_ms(settings, local, args.batch, args.tokens)
        row = {
            "weights": fmt,
            "size_mb": round(local.loaded_path.stat().st_size / 1e6, 1),
            "convert_and_load_s": round(load_s, 2),
            "prompt_ms_per_token": round(prompt_ms_per_token(llama), 2),
            "decode_ms_1": steps[1],
            f"decode_ms_{args.batch}": steps[args.batch],
            "decode_ms_per_token_batched": round(steps[args.batch] / args.batch, 2),
        }
        local.close()
        rows.append(row)
        print(row, flush=True)
    q = quality(paths, args.threads)
    for r in rows:
        r.update(q[r["weights"]])
    b = args.batch
    lines = [
        "## Weight formats for the local model (`weights`)",
        "",
        f"The packaged SmolLM2-135M-Instruct (Q4_1) as stored (`file`) and re-encoded by "
        f"llama.cpp's quantiser; llama.cpp threads {args.threads}. Prompt: ms per token of one "
        f"512-token chunk (best of 3). Decode: median ms of a `llama_decode` call carrying 1 "
        f"or {b} sequences (batched engine, greedy, {args.tokens} tokens each). Quality: "
        "perplexity on README.md + docs/lane.md (first 2,000 tokens) and next-token top-1 "
        "agreement / KL against `file`.",
        "",
        f"| weights | MB | prompt ms/token | decode ms, 1 seq | decode ms, {b} seqs | "
        f"ms/token at {b} | perplexity | top-1 agreement | KL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['weights']} | {r['size_mb']} | {r['prompt_ms_per_token']} | "
            f"{r['decode_ms_1']} | {r[f'decode_ms_{b}']} | {r['decode_ms_per_token_batched']} | "
            f"{r['perplexity']} | {r.get('top1_agreement', '—')} | {r.get('kl_from_file', '—')} |"
        )
    write_result("weight_formats", {"settings": vars(args), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
