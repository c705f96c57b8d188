"""Training samples as chat conversations, and the directory format that stores them.

A :class:`Sample` is one system/user/assistant exchange plus what the tuning and the
evaluation need to know about it: the task, the form (``behaviour``, ``intention``,
``hybrid`` or ``text`` for the recommendation-knowledge tasks), which recommender vector
fills each ``<user>``/``<item>`` placeholder (in order of appearance) and task metadata
(the labels the evaluation scores against).

A :class:`SampleSet` directory holds::

    manifest.json     what was built, from which recommender and data, counts per task
    samples.jsonl     one sample per line: {"messages": [...], "task", "form", "vectors", "meta"}
    vectors.npz       "user": (n_states, d) and "item": (n_items, d) vectors of the recommender
    openai.jsonl      (export) {"messages": [...]} only: the OpenAI fine-tuning format
    hf/               (export) a Hugging Face ``datasets`` dataset (save_to_disk)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.align.text import ITEM_TOKEN, USER_TOKEN
from whyrec.errors import ConfigError, DataError
from whyrec.io import atomic_path, atomic_write, write_json

SAMPLES_FORMAT = "whyrec-align-samples"
SAMPLES_VERSION = 1
FORMS = ("behaviour", "intention", "hybrid", "text")
VECTOR_KINDS = ("user", "item")


@dataclass
class Sample:
    """One conversation. ``vectors`` lists ``(kind, row)`` per placeholder, in order."""

    task: str
    form: str
    system: str
    prompt: str
    answer: str
    vectors: list[tuple[str, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def messages(self, *, with_answer: bool = True) -> list[dict[str, str]]:
        msgs = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.prompt},
        ]
        if with_answer:
            msgs.append({"role": "assistant", "content": self.answer})
        return msgs

    @property
    def has_placeholders(self) -> bool:
        return bool(self.vectors)

    def to_record(self) -> dict[str, Any]:
        return {
            "messages": self.messages(),
            "task": self.task,
            "form": self.form,
            "vectors": [[k, int(r)] for k, r in self.vectors],
            "meta": self.meta,
        }

    @classmethod
    def from_record(
        cls, rec: Any, *, path: str | Path | None = None, line: int | None = None
    ) -> Sample:
        """Parse and check one ``samples.jsonl`` record (errors name the file and line)."""

        def bad(msg: str, fld: str | None = None) -> DataError:
            return DataError(msg, path=path, line=line, field=fld)

        if not isinstance(rec, dict):
            raise bad(f"expected a JSON object, got {type(rec).__name__}")
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or [m.get("role") for m in msgs if isinstance(m, dict)] != [
            "system",
            "user",
            "assistant",
        ]:
            raise bad("expected messages with roles system, user, assistant", "messages")
        if not all(isinstance(m.get("content"), str) for m in msgs):
            raise bad("every message needs a string 'content'", "messages")
        form = rec.get("form")
        if form not in FORMS:
            raise bad(f"expected one of {list(FORMS)}, got {form!r}", "form")
        task = rec.get("task")
        if not isinstance(task, str) or not task:
            raise bad("expected a task name", "task")
        raw_vecs = rec.get("vectors", [])
        vectors: list[tuple[str, int]] = []
        if not isinstance(raw_vecs, list):
            raise bad("expected a list of [kind, row] pairs", "vectors")
        for v in raw_vecs:
            if (
                not isinstance(v, list | tuple)
                or len(v) != 2
                or v[0] not in VECTOR_KINDS
                or isinstance(v[1], bool)
                or not isinstance(v[1], int)
                or v[1] < 0
            ):
                raise bad(f'expected ["user"|"item", row >= 0], got {v!r}', "vectors")
            vectors.append((str(v[0]), int(v[1])))
        sample = cls(
            task=task,
            form=form,
            system=msgs[0]["content"],
            prompt=msgs[1]["content"],
            answer=msgs[2]["content"],
            vectors=vectors,
            meta=rec.get("meta") or {},
        )
        n_slots = sample.prompt.count(USER_TOKEN) + sample.prompt.count(ITEM_TOKEN)
        if n_slots != len(vectors):
            raise bad(
                f"the prompt has {n_slots} <user>/<item> placeholders but {len(vectors)} "
                "vectors are listed",
                "vectors",
            )
        return sample


def placeholder_kinds(prompt: str) -> list[str]:
    """``user``/``item`` for each placeholder of ``prompt``, in order of appearance."""
    out = []
    i = 0
    while True:
        u, it = prompt.find(USER_TOKEN, i), prompt.find(ITEM_TOKEN, i)
        hits = [p for p in (u, it) if p >= 0]
        if not hits:
            return out
        p = min(hits)
        out.append("user" if p == u else "item")
        i = p + 1


@dataclass
class SampleSet:
    """Samples plus the recommender vectors their placeholders refer to."""

    samples: list[Sample]
    user_vectors: np.ndarray  # (n_states, d); rows referenced by ("user", row)
    item_vectors: np.ndarray  # (n_items, d); rows referenced by ("item", item_idx)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f"{s.form}/{s.task}" for s in self.samples).items()))

    def check(self) -> None:
        """Every placeholder refers to an existing vector row."""
        for n, s in enumerate(self.samples):
            for kind, row in s.vectors:
                table = self.user_vectors if kind == "user" else self.item_vectors
                if row >= len(table):
                    raise DataError(
                        f"sample {n} ({s.task}) refers to {kind} vector row {row}, but the "
                        f"table has {len(table)} rows",
                        field="vectors",
                    )

    def subset(
        self, tasks: Iterable[str] | None = None, forms: Iterable[str] | None = None
    ) -> SampleSet:
        keep_t = set(tasks) if tasks is not None else None
        keep_f = set(forms) if forms is not None else None
        chosen = [
            s
            for s in self.samples
            if (keep_t is None or s.task in keep_t) and (keep_f is None or s.form in keep_f)
        ]
        return SampleSet(chosen, self.user_vectors, self.item_vectors, dict(self.info))

    @staticmethod
    def concat(sets: Sequence[SampleSet]) -> SampleSet:
        """One set from several built from the *same* recommender (user rows re-indexed)."""
        if not sets:
            raise ConfigError("nothing to concatenate")
        items = sets[0].item_vectors
        users, samples, offset = [], [], 0
        for s in sets:
            if s.item_vectors.shape != items.shape or not np.array_equal(s.item_vectors, items):
                raise ConfigError("sample sets come from different recommenders (item vectors)")
            for sample in s.samples:
                vecs = [(k, r + offset if k == "user" else r) for k, r in sample.vectors]
                samples.append(
                    Sample(
                        sample.task,
                        sample.form,
                        sample.system,
                        sample.prompt,
                        sample.answer,
                        vecs,
                        sample.meta,
                    )
                )
            users.append(s.user_vectors)
            offset += len(s.user_vectors)
        info = dict(sets[0].info)
        info["parts"] = [s.info.get("builder") for s in sets]
        user_vecs = np.concatenate(users) if users else np.zeros((0, items.shape[1]), np.float32)
        return SampleSet(samples, user_vecs, items, info)

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path, *, export: bool = True) -> Path:
        """Write the set directory atomically; ``export`` adds openai.jsonl and hf/."""
        path = Path(path)
        self.check()
        with atomic_path(path, is_dir=True) as tmp:
            with open(tmp / "samples.jsonl", "w", encoding="utf-8") as fh:
                for s in self.samples:
                    fh.write(json.dumps(s.to_record(), ensure_ascii=False) + "\n")
            np.savez(
                tmp / "vectors.npz",
                user=self.user_vectors.astype(np.float32),
                item=self.item_vectors.astype(np.float32),
            )
            manifest = {
                "format": SAMPLES_FORMAT,
                "format_version": SAMPLES_VERSION,
                "n_samples": len(self.samples),
                "counts": self.counts(),
                "vector_dim": int(self.item_vectors.shape[1]) if self.item_vectors.ndim == 2 else 0,
                **self.info,
            }
            if export:
                manifest["openai_jsonl"] = export_openai(self, tmp / "openai.jsonl")
                manifest["hf_dataset"] = _try_export_hf(self, tmp / "hf")
            write_json(tmp / "manifest.json", manifest)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SampleSet:
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise DataError("not an alignment sample directory: manifest.json missing", path=path)
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", path=mpath, line=exc.lineno) from None
        if manifest.get("format") != SAMPLES_FORMAT:
            raise DataError(
                f"expected format {SAMPLES_FORMAT!r}, got {manifest.get('format')!r}",
                path=mpath,
                field="format",
            )
        samples = list(read_samples(path / "samples.jsonl"))
        vpath = path / "vectors.npz"
        if not vpath.is_file():
            raise DataError("vectors.npz missing", path=path)
        with np.load(vpath) as data:
            if "user" not in data or "item" not in data:
                raise DataError("expected arrays 'user' and 'item'", path=vpath)
            users, items = data["user"], data["item"]
        info = {
            k: v
            for k, v in manifest.items()
            if k not in ("format", "format_version", "n_samples", "counts", "vector_dim")
        }
        out = cls(samples, users, items, info)
        out.check()
        return out


def read_samples(path: str | Path) -> Iterator[Sample]:
    path = Path(path)
    if not path.is_file():
        raise DataError("samples file not found", path=path)
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg})", path=path, line=n) from None
            yield Sample.from_record(rec, path=path, line=n)


def export_openai(
    samples: SampleSet | Iterable[Sample], path: str | Path, *, include_placeholders: bool = False
) -> dict[str, Any]:
    """Write the OpenAI chat fine-tuning JSONL (``{"messages": [...]}`` per line).

    Samples with ``<user>``/``<item>`` placeholders carry vectors a hosted model cannot
    receive, so they are left out unless ``include_placeholders`` (then the tokens stay
    as plain text). Returns the counts written and skipped.
    """
    written = skipped = 0
    lines = []
    for s in samples:
        if s.has_placeholders and not include_placeholders:
            skipped += 1
            continue
        lines.append(json.dumps({"messages": s.messages()}, ensure_ascii=False))
        written += 1
    text = "\n".join(lines) + ("\n" if lines else "")
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return {"file": Path(path).name, "written": written, "skipped_with_placeholders": skipped}


def to_hf_dataset(samples: SampleSet | Iterable[Sample]) -> Any:
    """A ``datasets.Dataset`` with columns messages, task, form, vectors, meta (JSON text)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the Hugging Face export needs the 'datasets' package: pip install 'whyrec[tune]'"
        ) from exc
    rows = [
        {
            "messages": s.messages(),
            "task": s.task,
            "form": s.form,
            "vector_kinds": [k for k, _ in s.vectors],
            "vector_rows": [int(r) for _, r in s.vectors],
            "meta": json.dumps(s.meta, ensure_ascii=False),
        }
        for s in samples
    ]
    features = datasets.Features(
        {
            "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "task": datasets.Value("string"),
            "form": datasets.Value("string"),
            "vector_kinds": datasets.Sequence(datasets.Value("string")),
            "vector_rows": datasets.Sequence(datasets.Value("int64")),
            "meta": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def _try_export_hf(samples: SampleSet, path: Path) -> dict[str, Any] | None:
    try:
        import datasets
    except ImportError:
        return None

    ds = to_hf_dataset(samples)
    quiet = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # stdout/stderr stay clean for the CLI's JSON
    try:
        ds.save_to_disk(str(path))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return {"dir": path.name, "rows": len(ds)}
