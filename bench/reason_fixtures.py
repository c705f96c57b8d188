"""Record real explanation replies of the configured LLM (default: the packaged
SmolLM2-135M) as test fixtures for the claim verifier.

For each of ``--users`` users of a LANE run and their top ``-k`` items, the pipeline plans
the request, the LLM answers, and the raw reply is stored with the evidence it must be
true to and what the verifier concluded (kept text, whether it names its evidence). The
test ``tests/explain/test_verify.py::test_real_smollm2_replies`` replays them, so a change
to the verifier that changes a verdict on a real reply shows up.

Usage: .venv/bin/python bench/reason_fixtures.py --run runs/demo/models/lane \
    --out tests/explain/fixtures/smollm2_reasons.json [--users 6] [-k 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", type=int, default=6)
    ap.add_argument("-k", type=int, default=3)
    args = ap.parse_args()

    from whyrec.explain.explainer import ExplanationPipeline
    from whyrec.explain.schemas import _validate_reason, first_sentence, strip_leading_label
    from whyrec.llm import LLMClient

    client = LLMClient.from_settings()
    p = ExplanationPipeline.from_run(args.run, client)
    model = p.model
    users = [u for u, s in enumerate(model.preference_sources) if s in ("llm", "partial")]
    cases = []
    for u in users[: args.users]:
        subject = p.subject(u)
        for item in p.top_items(subject, args.k):
            plan = p.plan(subject, int(item))
            from whyrec.explain.asking import ask

            outcomes = [ask(client, r) for r in plan.requests]
            replies = []
            for o in outcomes:
                if isinstance(o, BaseException):
                    continue
                if plan.kind == "cot":
                    replies.append(o.parsed.explanation)
                    continue
                try:  # what the pipeline keeps of a sentences-mode reply
                    replies.append(
                        _validate_reason(None, first_sentence(strip_leading_label(o.text)))
                    )
                except ValueError:
                    continue
            if not replies:
                print(f"user {u} item {int(item)}: no valid reply")
                continue
            reply = " ".join(" ".join(r.split()) for r in replies)
            v = p.verifier.verify(reply, plan.evidence, subject.history, subject.user_id)
            cases.append(
                {
                    "user": subject.user_id,
                    "reply": reply,
                    "history": [int(i) for i in subject.history],
                    "evidence": plan.evidence.to_dict(),
                    "kept": v.text,
                    "names_evidence": v.names_evidence,
                    "removed": [c.to_dict() for c in v.removed],
                }
            )
            print(f"user {u} item {int(item)}: kept {len(v.kept)}/{len(v.checks)}")
    payload = {
        "model": client.model,
        "titles": [str(t) for t in model.item_titles],
        "texts": p.item_texts,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{len(cases)} replies written to {args.out}")


if __name__ == "__main__":
    main()
