"""The real base model (SmolLM2-135M-Instruct from the packaged GGUF) through LoRA tuning.

Intention alignment must make the LLM read the recommender's item vector: after a few
steps on "what is the title of <item>?" for three items, the answer follows the vector —
also when the vector of another item is put in its place.
"""

from __future__ import annotations

import numpy as np
import pytest

from whyrec.align.builders import AlignmentConfig, build_alignment
from whyrec.align.samples import Sample, SampleSet

pytestmark = pytest.mark.slow
pytest.importorskip("peft")

ITEMS = [0, 14, 25]


def test_intention_surrogate_learns_to_read_item_vectors(
    f_model, ring_ds, shared_home, monkeypatch, tmp_path
):
    from whyrec.align.decoding import TitleTrie, generate
    from whyrec.align.tuning import Surrogate, TuneConfig, train_surrogate

    monkeypatch.setenv("WHYREC_HOME", str(shared_home))  # the converted base model is reused
    full = build_alignment(
        f_model,
        ring_ds,
        np.arange(20),
        AlignmentConfig(form="intention", tasks={"item_title": 1}, n_samples=200),
    )
    sset = SampleSet(
        [s for s in full.samples if s.meta["item"] in ITEMS],
        full.user_vectors,
        full.item_vectors,
        full.info,
    )
    cfg = TuneConfig(steps=16, batch_size=4, lr=3e-3, connector_lr=3e-3, warmup_steps=3)
    res = train_surrogate(sset, tmp_path / "run", cfg, progress=False)
    assert res.summary()["loss_last10"] < 0.5 * res.summary()["loss_first10"]
    sur = res.surrogate
    assert sur.base["kind"] == "gguf" and sur.base["packaged"]

    # one prompt per item, then the same prompts with the vectors rotated
    first = {s.meta["item"]: s for s in reversed(sset.samples)}
    probes = [first[i] for i in ITEMS]
    rotated = [
        Sample(p.task, p.form, p.system, p.prompt, "", [("item", ITEMS[(k + 1) % 3])], {})
        for k, p in enumerate(probes)
    ]
    probe_set = SampleSet(probes + rotated, sset.user_vectors, sset.item_vectors)
    trie = TitleTrie(sur, ring_ds.titles)
    answers = generate(sur, probe_set, trie=trie)
    titles = [ring_ds.titles[i] for i in ITEMS]
    assert answers[:3] == titles
    assert answers[3:] == titles[1:] + titles[:1]  # the answer follows the vector

    back = Surrogate.load(tmp_path / "run")
    assert generate(back, probe_set, trie=trie) == answers
