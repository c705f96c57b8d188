"""MiniLM encoding throughput: texts in the order given vs shortest first.

The texts are what the demo encodes on MovieLens-100k: the 1,682 titles and the grounded
tastes of all 943 users (about 4,700 sentences of ~50 tokens). A batch is padded to its
longest text, so the order decides how much padding the encoder computes. Both orders
run in the same process, repeated, without the embedding cache; the median is quoted.

Usage: .venv/bin/python bench/encode.py [--repeats 3]
Run it alone on the machine (2 threads of torch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_result
from whyrec.data import load_dataset
from whyrec.embed.sentence import SentenceTransformerEncoder
from whyrec.explain.pipeline import extract_preferences


def in_given_order(enc: SentenceTransformerEncoder, texts: list[str]) -> np.ndarray:
    parts = [
        enc._encode(texts[i : i + enc.batch_size]) for i in range(0, len(texts), enc.batch_size)
    ]
    return np.concatenate(parts)


def timed(fn, texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(texts)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dataset = load_dataset("movielens-100k")
    enc = SentenceTransformerEncoder(cache=False)
    prefs = extract_preferences(
        dataset, client=None, encoder=enc, grounded_only=True, progress=False
    ).prefs
    sets = {
        "titles": list(dataset.titles),
        "tastes": [t for u in sorted(prefs) for t in prefs[u].preferences],
    }
    _ = enc.model
    rows, payload = [], {}
    for name, texts in sets.items():
        given, a = timed(lambda t: in_given_order(enc, t), texts, args.repeats)
        shortest, b = timed(lambda t: enc._encode_batched(t, False), texts, args.repeats)
        diff = float(np.abs(a - b).max())
        payload[name] = {
            "texts": len(texts),
            "given_order_s": round(given, 2),
            "shortest_first_s": round(shortest, 2),
            "ratio": round(given / shortest, 2),
            "max_abs_difference": diff,
        }
        rows.append(
            f"| {name} | {len(texts):,} | {given:.2f} | {shortest:.2f} | "
            f"{given / shortest:.2f}x | {diff:.1e} |"
        )
    md = "\n".join(
        [
            "## Text encoding (MiniLM, MovieLens-100k)",
            "",
            "all-MiniLM-L6-v2 on CPU, batches of 64, no cache; seconds are medians of "
            f'{args.repeats} runs in one process. "Shortest first" is what '
            "`TextEncoder.encode` does for encoders that pad batches (`pads_batches`: the "
            "sentence-transformers ones); the vectors agree to the difference shown.",
            "",
            "| texts | count | given order s | shortest first s | speed-up | max abs diff |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_result("encode", payload, md)
    print(md)


if __name__ == "__main__":
    main()
