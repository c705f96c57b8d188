"""The comparison: LANE's explanations, the no-alignment baseline and the template.

For each selected user the harness takes the LANE model's top-ranked item and a
low-ranked one (rank ``low_rank`` among the user's unseen items), has every system
explain both, scores every text against the same evidence (weights, attribution,
history, catalogue), optionally asks an LLM judge, and returns an
:class:`~whyrec.evaluate.explanations.report.ExplanationReport`.

Systems:

* ``lane`` — :meth:`LaneExplainer.explain`: LANE's four-step chain of thought with the
  preferences, their weights and the influential history items. When the LLM's reply
  never validates the user gets the grounded template instead; the case keeps that text
  (it is what the product shows) and the ``llm_written`` metric counts how often.
* ``baseline`` — :meth:`LaneExplainer.baseline`: the same LLM with only the history and
  the item, no preferences, weights or attribution.
* ``template`` — the grounded template reason, no LLM.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from whyrec.errors import ConfigError
from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.evaluate.explanations.counterfactual import score_counterfactual
from whyrec.evaluate.explanations.judges import (
    JudgeContext,
    PairwiseJudge,
    PairwiseResult,
    RubricJudge,
    summarize_pairwise,
)
from whyrec.evaluate.explanations.report import ExplanationReport
from whyrec.evaluate.explanations.scoring import (
    ExplanationScorer,
    pooled_length_correlation,
    summarize_systems,
)
from whyrec.evaluate.explanations.tastes import model_taste_checks, reason_taste_agreement
from whyrec.explain.grounding import Catalogue

SYSTEMS = ("lane", "baseline", "template")
POSITIONS = ("top", "low")
Progress = Callable[[str], None]


def _noop(_msg: str) -> None:
    pass


def select_users(
    model: Any, n: int, *, seed: int = 0, prefer: Sequence[str] = ("llm", "partial")
) -> list[int]:
    """``n`` user indices, users whose preferences the LLM wrote first (seeded order)."""
    if n < 1:
        raise ConfigError(f"--users must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    order = [int(u) for u in rng.permutation(model.n_users)]
    sources = list(getattr(model, "preference_sources", []) or [])
    if sources:
        order.sort(key=lambda u: 0 if sources[u] in prefer else 1)  # stable: keeps seeding
    return order[:n]


def item_for_position(model: Any, user: int, position: str, low_rank: int) -> int:
    """The top-ranked unseen item, or the one at rank ``low_rank`` (clamped)."""
    if position == "top":
        return int(model.recommend(user, k=1).items[0])
    if position == "low":
        recs = model.recommend(user, k=max(1, low_rank))
        return int(recs.items[-1])
    raise ConfigError(f"unknown position {position!r}; expected 'top' or 'low'")


def explain_cases(
    model: Any,
    explainer: Any,
    users: Sequence[int],
    *,
    systems: Sequence[str] = SYSTEMS,
    positions: Sequence[str] = POSITIONS,
    low_rank: int = 500,
    references: Mapping[tuple[str, str], Sequence[str]] | None = None,
    progress: Progress = _noop,
) -> list[ExplanationCase]:
    """Every system's explanation of each user's top and low item, with shared evidence."""
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ConfigError(f"unknown system(s) {unknown}; expected some of {list(SYSTEMS)}")
    client = explainer.client
    if client is None and any(s in ("lane", "baseline") for s in systems):
        raise ConfigError("the lane and baseline systems need an LLM client")
    writer = str(getattr(client, "model", "")) if client is not None else "template"
    titles = model.item_titles
    cases: list[ExplanationCase] = []
    for n_user, u in enumerate(users, start=1):
        uid = str(model.user_ids[u])
        history = [int(i) for i in model.histories[u]]
        recent = [str(titles[i]) for i in history[-explainer.history_window :]]
        for position in positions:
            item = item_for_position(model, u, position, low_rank)
            subject = explainer.subject(u)
            plan = explainer.plan(subject, item, use_llm=False)
            evidence = plan.fallback  # the template, with the item-specific evidence
            full = model.attribution(item, u, top_history=10**6)
            common: dict[str, Any] = {
                "user": uid,
                "item": item,
                "item_id": evidence.item_id,
                "title": evidence.title,
                "position": position,
                "rank": int(evidence.rank),
                "preferences": list(evidence.preferences),
                "preference_source": evidence.preference_source,
                "weights": [float(w) for w in evidence.weights],
                "preference_drops": [float(p["score_drop"]) for p in evidence.preference_effects],
                "history": history,
                "history_drops": [
                    {
                        "item": int(h["item"]),
                        "title": str(titles[h["item"]]),
                        "score_drop": float(h["score_drop"]),
                    }
                    for h in full.history
                ],
                "recent_titles": recent,
                "references": list((references or {}).get((uid, evidence.item_id), [])),
            }
            t0 = time.perf_counter()
            for system in systems:
                cases.append(
                    _system_case(
                        system, explainer, subject, item, u, writer, evidence.reason, common
                    )
                )
            for c in cases[-len(systems) :]:
                c.details["cited"] = evidence.cited
                # which facts each taste names, and the item's: is a cited taste about it?
                c.details["taste_facts"] = [p["names"] for p in plan.evidence.preference_effects]
                c.details["item_facts"] = list(plan.evidence.fact_keys)
            progress(
                f"user {n_user}/{len(users)} ({uid}), {position} item (rank {evidence.rank}): "
                f"{len(systems)} explanations in {time.perf_counter() - t0:.1f}s"
            )
    return cases


def _system_case(
    system: str,
    explainer: Any,
    subject: Any,
    item: int,
    user: int,
    writer: str,
    template: str,
    common: dict[str, Any],
) -> ExplanationCase:
    """One system's explanation of (subject, item): the template, LANE's or the baseline's."""
    if system == "template":
        return ExplanationCase(
            system="template", text=template, source="template", writer="template", **common
        )
    if system == "lane":
        ex = explainer.explain_subject(subject, item)
        steps = ex.steps or {}
        case = ExplanationCase(
            system="lane",
            text=ex.reason,
            source=ex.reason_source,
            writer=ex.model or writer,
            likelihood=steps.get("likelihood"),
            problems=list(ex.problems),
            **common,
        )  # fmt: skip
        if steps:
            case.details["steps"] = steps
        if ex.removed_sentences:
            case.details["removed_sentences"] = ex.removed_sentences
        return case
    text, problems = explainer.baseline_with_problems(item, user)
    return ExplanationCase(
        system="baseline",
        text=text,
        source="baseline-llm" if text else "failed",
        writer=writer,
        problems=problems,
        **common,
    )  # fmt: skip


def score_claims(model: Any, cases: Sequence[ExplanationCase], catalogue: Catalogue) -> None:
    """``verified_sentences``: the share of each text's sentences that the claim verifier
    supports against the item's evidence (``case.metrics``)."""
    from whyrec.explain.explainer import ExplanationPipeline

    pipeline = ExplanationPipeline(
        model, None, item_texts=catalogue.tags if any(catalogue.tags) else None
    )
    users = {str(u): i for i, u in enumerate(model.user_ids)}
    plans: dict[tuple[str, int], Any] = {}
    for c in cases:
        if not c.ok or c.user not in users:
            continue
        key = (c.user, c.item)
        if key not in plans:
            plans[key] = pipeline.plan(pipeline.subject(users[c.user]), c.item, use_llm=False)
        plan = plans[key]
        check = pipeline.verifier.verify(str(c.text), plan.evidence, plan.subject.history, c.user)
        n = len(check.checks)
        c.metrics["verified_sentences"] = len(check.kept) / n if n else None


def score_boilerplate(cases: Sequence[ExplanationCase], encoder: Any = None) -> dict[str, Any]:
    """Per system: the share of each text's sentences that the same system wrote (nearly)
    alike for 3+ users (``case.metrics["boilerplate_sentences"]``); returns counts."""
    from whyrec.explain.textutil import sentences
    from whyrec.explain.verify import BoilerplateDetector

    out: dict[str, Any] = {}
    for system in dict.fromkeys(c.system for c in cases):
        mine = [c for c in cases if c.system == system and c.ok]
        by_user: dict[str, list[str]] = {}
        for c in mine:
            by_user.setdefault(c.user, []).extend(sentences(str(c.text)))
        det = BoilerplateDetector(encoder).fit(by_user)
        for c in mine:
            sents = sentences(str(c.text))
            flags = [det.is_boilerplate(s, c.user) for s in sents]
            c.metrics["boilerplate_sentences"] = sum(flags) / len(flags) if flags else None
        out[system] = det.summary()
    return out


def judge_cases(
    cases: Sequence[ExplanationCase],
    client: Any,
    *,
    item_texts: Sequence[str] | None = None,
    rubric: bool = True,
    pairwise: bool = True,
    pairs: Sequence[tuple[str, str]] | None = None,
    progress: Progress = _noop,
) -> list[PairwiseResult]:
    """Rubric grades into ``case.metrics["rubric"]``; pairwise results returned."""

    def context(c: ExplanationCase) -> JudgeContext:
        text = item_texts[c.item] if item_texts is not None else ""
        return JudgeContext(history=c.recent_titles, item_title=c.title, item_text=text)

    if rubric:
        judge = RubricJudge(client)
        ok = [c for c in cases if c.ok]
        for n, c in enumerate(ok, start=1):
            g = judge.grade(context(c), str(c.text))
            c.metrics["rubric"] = float(g.score) if g.score is not None else None
            c.details["rubric"] = g.to_dict()
            if n % 5 == 0 or n == len(ok):
                progress(f"rubric judge: {n}/{len(ok)}")
    results: list[PairwiseResult] = []
    if pairwise:
        pj = PairwiseJudge(client)
        systems = list(dict.fromkeys(c.system for c in cases))
        todo = list(pairs) if pairs is not None else list(itertools.combinations(systems, 2))
        by_task: dict[str, dict[str, ExplanationCase]] = {}
        for c in cases:
            by_task.setdefault(c.task, {})[c.system] = c
        jobs = [
            (g[x], g[y]) for g in by_task.values() for x, y in todo
            if x in g and y in g and g[x].ok and g[y].ok
        ]  # fmt: skip
        for n, (cx, cy) in enumerate(jobs, start=1):
            r = pj.compare(context(cx), str(cx.text), str(cy.text), x=cx.system, y=cy.system)
            results.append(r)
            if n % 5 == 0 or n == len(jobs):
                progress(f"pairwise judge: {n}/{len(jobs)} comparisons (2 orders each)")
    return results


def _usage(*clients: Any) -> dict[str, Any]:
    """Calls, cache hits, failures, tokens and latency per harness stage."""
    out: dict[str, Any] = {}
    for client in clients:
        usage = getattr(client, "usage", None)
        if usage is None:
            continue
        for stage, u in usage.by_stage().items():
            if stage in ("explanations", "baseline", "judge-rubric", "judge-pairwise"):
                out[stage] = u.as_dict()
    return out


def load_references(path: Any) -> dict[tuple[str, str], list[str]]:
    """Reference texts from a CSV or JSON-lines file with user_id, item_id and text.

    The text column may be called ``reference``, ``text`` or ``review_text``; several
    rows for the same (user, item) give several references.
    """
    import csv
    import json
    from pathlib import Path

    from whyrec.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError("references file not found", path=path)
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise DataError(f"not a JSON object: {exc}", path=path, line=n) from None
            if not isinstance(obj, dict):
                raise DataError("expected a JSON object per line", path=path, line=n)
            rows.append((n, obj))
    else:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                rows.append((reader.line_num, row))
    out: dict[tuple[str, str], list[str]] = {}
    for n, row in rows:
        for col in ("user_id", "item_id"):
            if not str(row.get(col) or "").strip():
                raise DataError(f"missing {col}", path=path, line=n, field=col)
        text = next(
            (row[c] for c in ("reference", "text", "review_text") if str(row.get(c) or "").strip()),
            None,
        )
        if text is None:
            raise DataError(
                "no reference text (expected a 'reference', 'text' or 'review_text' value)",
                path=path,
                line=n,
                field="reference",
            )
        out.setdefault((str(row["user_id"]).strip(), str(row["item_id"]).strip()), []).append(
            str(text)
        )
    return out


def _pipeline(
    model: Any, client: Any, dataset: Any, history_window: int, mode: str
) -> tuple[Catalogue, list[str] | None, Any]:
    """``(catalogue, item texts, pipeline)``: the titles and facts the harness grounds
    with, and the explanation pipeline it explains with (the dataset's fact label)."""
    from whyrec.explain.explainer import ExplanationPipeline
    from whyrec.explain.gathering import fact_label_of

    catalogue = (
        Catalogue.from_dataset(dataset) if dataset is not None else Catalogue(model.item_titles)
    )
    item_texts = catalogue.tags if any(catalogue.tags) else None
    return catalogue, item_texts, ExplanationPipeline(
        model, client, item_texts=item_texts, history_window=history_window, mode=mode,
        fact_label=fact_label_of(
            "genres" if dataset is None or "genres" in getattr(dataset, "text_fields", [])
            else (list(getattr(dataset, "text_fields", [])) or [None])[0]
        ),
    )  # fmt: skip


def _score(
    model: Any,
    explainer: Any,
    chosen: list[int],
    cases: list[ExplanationCase],
    catalogue: Catalogue,
    encoder: Any,
    seed: int,
) -> tuple[ExplanationScorer, Any, dict[str, Any]]:
    """Every automatic score of the cases (in place); ``(scorer, boilerplate, tastes)``."""
    scorer = ExplanationScorer(catalogue, encoder=encoder)
    scorer.score_all(cases)
    score_counterfactual(model, cases, catalogue, seed=seed)
    score_claims(model, cases, catalogue)
    boilerplate = score_boilerplate(cases, encoder)
    tastes = {
        "reasons": reason_taste_agreement(cases, catalogue),
        "model": model_taste_checks(explainer, chosen, k=5),
    }
    return scorer, boilerplate, tastes


def evaluate_explanations(
    model: Any,
    *,
    client: Any = None,
    judge_client: Any = None,
    dataset: Any = None,
    encoder: Any = None,
    users: int = 10,
    user_indices: Sequence[int] | None = None,
    systems: Sequence[str] = SYSTEMS,
    positions: Sequence[str] = POSITIONS,
    low_rank: int = 500,
    seed: int = 0,
    rubric: bool = True,
    pairwise: bool = True,
    pairs: Sequence[tuple[str, str]] | None = None,
    references: Mapping[tuple[str, str], Sequence[str]] | None = None,
    history_window: int = 15,
    mode: str = "auto",
    progress: Progress = _noop,
) -> ExplanationReport:
    """Generate, score and (optionally) judge explanations; see the module docstring.

    ``dataset`` supplies genres for grounding and for the prompts (the model alone
    knows only titles). ``judge_client`` defaults to ``client``; with neither, or with
    ``rubric=pairwise=False``, no judge runs.
    """
    if not getattr(model, "has_attribution", False):  # any object may be passed in
        raise ConfigError(
            f"evaluate-explanations needs a model whose scores depend on the history (its "
            f"evidence), got {getattr(model, 'name', model)!r}"
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    catalogue, item_texts, explainer = _pipeline(model, client, dataset, history_window, mode)
    chosen = (
        list(user_indices) if user_indices is not None else select_users(model, users, seed=seed)
    )
    cases = explain_cases(
        model, explainer, chosen, systems=systems, positions=positions, low_rank=low_rank,
        references=references, progress=progress,
    )  # fmt: skip
    timings["explain_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    scorer, boilerplate, tastes = _score(model, explainer, chosen, cases, catalogue, encoder, seed)
    timings["score_s"] = time.perf_counter() - t1

    judge = judge_client if judge_client is not None else client
    pair_results: list[PairwiseResult] = []
    t2 = time.perf_counter()
    if judge is not None and (rubric or pairwise):
        pair_results = judge_cases(
            cases, judge, item_texts=item_texts, rubric=rubric, pairwise=pairwise, pairs=pairs,
            progress=progress,
        )  # fmt: skip
    timings["judge_s"] = time.perf_counter() - t2

    judge_name = (
        str(getattr(judge, "model", "")) if judge is not None and (rubric or pairwise) else None
    )
    writer = str(getattr(client, "model", "")) if client is not None else "template only"
    sources = {c.preference_source for c in cases}
    report = ExplanationReport(
        systems=list(systems),
        writer=writer,
        judge=judge_name,
        encoder=str(getattr(encoder, "id", "none (lexical matching only)")),
        rows=summarize_systems(cases, systems),
        pairwise=summarize_pairwise(pair_results),
        cases=cases,
        config={
            "users": len(chosen),
            "user_ids": [str(model.user_ids[u]) for u in chosen],
            "positions": list(positions),
            "low_rank": low_rank,
            "seed": seed,
            "rubric": rubric and judge is not None,
            "pairwise": pairwise and judge is not None,
            "history_window": history_window,
            "explain_mode": explainer.mode,
            "dataset": getattr(dataset, "name", None),
            "references": sum(1 for c in cases if c.references),
            **scorer.describe(),
        },
        extra={
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "pairwise_raw": [r.to_dict() for r in pair_results],
            "rubric_length_spearman_all": pooled_length_correlation(cases),
            "preference_sources": sorted(sources),
            "boilerplate": boilerplate,
            "tastes": tastes,
            "llm_usage": _usage(client, judge),
        },
    )
    if not any(c.references for c in cases):
        report.notes.append(
            "no reference texts: BLEU, ROUGE and the BERTScore-style score are not computed "
            "(pass --references with user_id,item_id,reference rows)"
        )
    return report


def rescore_report(
    report: ExplanationReport, catalogue: Catalogue, *, encoder: Any = None, model: Any = None
) -> ExplanationReport:
    """Score a saved report's texts again (e.g. after the metrics changed).

    The explanations, the evidence and the judges' verdicts are kept as they are; the
    per-case metrics and the summary rows are recomputed; with ``model`` (the run that
    was explained) the counterfactual and claim-verification metrics too.
    """
    scorer = ExplanationScorer(catalogue, encoder=encoder)
    scorer.score_all(report.cases)
    if model is not None:  # the metrics that re-run the recommender
        score_counterfactual(model, report.cases, catalogue, seed=int(report.config.get("seed", 0)))
        score_claims(model, report.cases, catalogue)
    report.extra["boilerplate"] = score_boilerplate(report.cases, encoder)
    report.extra.setdefault("tastes", {})["reasons"] = reason_taste_agreement(
        report.cases, catalogue
    )
    report.rows = summarize_systems(report.cases, report.systems)
    report.extra["rubric_length_spearman_all"] = pooled_length_correlation(report.cases)
    report.config.update(scorer.describe())
    return report
