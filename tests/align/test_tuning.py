"""LoRA training of each variant on tiny data with a tiny random Llama and the real tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whyrec.align.builders import AlignmentConfig, KnowledgeConfig, build_alignment, build_knowledge
from whyrec.align.samples import Sample, SampleSet
from whyrec.align.tuning import (
    Surrogate,
    TuneConfig,
    batch_indices,
    resolve_base,
    train_surrogate,
)
from whyrec.errors import ConfigError, DataError, ModelError

pytest.importorskip("peft")

FAST = dict(
    batch_size=2, lr=5e-3, warmup_steps=1, lora_r=4, lora_alpha=8, checkpoint_every=2, seed=0
)


@pytest.fixture(scope="module")
def sets(f_model, ring_ds):
    users = np.arange(10)
    out = {
        form: build_alignment(
            f_model, ring_ds, users, AlignmentConfig(form=form, n_samples=12, max_history=4)
        )
        for form in ("behaviour", "intention", "hybrid")
    }
    out["knowledge"] = build_knowledge(ring_ds, users, KnowledgeConfig(n_samples=12, max_history=4))
    return out


@pytest.mark.parametrize("form", ["behaviour", "intention", "hybrid", "knowledge"])
def test_a_few_steps_of_each_variant_train_save_and_load(form, sets, tiny_base, tmp_path):
    sset = sets[form]
    res = train_surrogate(
        sset, tmp_path / form, TuneConfig(steps=3, **FAST), base_model=tiny_base(), progress=False
    )
    assert res.steps == 3 and len(res.losses) == 3 and all(np.isfinite(res.losses))
    sur = res.surrogate
    has_vectors = form in ("intention", "hybrid")
    assert (sur.connectors is not None) == has_vectors
    assert not (tmp_path / form / "checkpoints").exists()  # removed once finished

    back = Surrogate.load(tmp_path / form, base_model=tiny_base())
    assert back.manifest["training"]["steps"] == 3
    assert back.manifest["forms"] == sorted({s.form for s in sset.samples})
    enc = [sur.encode(s) for s in sset.samples[:4]]
    tables = sur._tables(sset)
    sur.model.eval()
    back.model.eval()
    with torch.no_grad():
        a, b = sur.loss(enc, tables), back.loss(enc, back._tables(sset))
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_intention_training_moves_connectors_and_lora(sets, tiny_base, tmp_path):
    sset = sets["intention"]
    sur = Surrogate.create(TuneConfig(**FAST), sset, base_model=tiny_base())
    before = {k: v.clone() for k, v in sur.connectors.state_dict().items()}
    enc = [sur.encode(s) for s in sset.samples[:4]]
    loss = sur.loss(enc, sur._tables(sset))
    loss.backward()
    grads = [p.grad for p in sur.connectors.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    lora = [p for n, p in sur.model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    frozen = [p for n, p in sur.model.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in frozen)  # the base LLM stays frozen
    res = train_surrogate(
        sset,
        tmp_path / "run",
        TuneConfig(steps=2, **FAST),
        base_model=tiny_base(),
        progress=False,
    )
    after = res.surrogate.connectors.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "net" in k)


def test_loss_is_on_answer_tokens_only(sets, tiny_base):
    sset = sets["behaviour"]
    sur = Surrogate.create(TuneConfig(**FAST), sset, base_model=tiny_base())
    samples = sset.samples[:3]
    enc = [sur.encode(s) for s in samples]
    ids, mask, positions, target = sur.batch(enc, with_answer=True)
    assert int(target.sum()) == sum(len(e.answer) for e in enc)
    predicted = torch.roll(ids, -1, dims=1)[target].tolist()
    assert predicted == [t for e in enc for t in e.answer]  # exactly the answer + end token
    assert enc[0].answer[-1] == sur.end_id
    # reference: the model's own loss with prompt tokens masked out (-100), batch of one
    sur.model.eval()
    with torch.no_grad():
        mine = sur.loss(enc[:1], None)
        full = torch.tensor([enc[0].prompt + enc[0].answer])
        labels = full.clone()
        labels[0, : len(enc[0].prompt)] = -100
        with sur.autocast():
            ref = sur.model(input_ids=full, labels=labels).loss
    assert float(mine) == pytest.approx(float(ref), rel=1e-3)


def test_placeholder_mismatch_is_a_clear_error(sets, tiny_base):
    sset = sets["intention"]
    sur = Surrogate.create(TuneConfig(**FAST), sset, base_model=tiny_base())
    s = next(x for x in sset.samples if len(x.vectors) >= 2)
    bad = Sample(s.task, s.form, s.system, s.prompt, s.answer, s.vectors[:-1], s.meta)
    with pytest.raises(DataError, match="sample 7.*placeholder|sample 7.*<user>/<item>"):
        sur.encode(bad, where="sample 7")
    plain = Surrogate.create(TuneConfig(**FAST), sets["behaviour"], base_model=tiny_base())
    enc = [plain.encode(s)]
    with pytest.raises(ModelError, match="no connectors"):
        plain.loss(enc, None)


def test_resume_follows_the_uninterrupted_path(sets, tiny_base, tmp_path):
    sset = sets["hybrid"]
    cfg = TuneConfig(steps=4, **FAST)
    full = train_surrogate(sset, tmp_path / "full", cfg, base_model=tiny_base(), progress=False)
    part = train_surrogate(
        sset, tmp_path / "part", cfg, base_model=tiny_base(), progress=False, stop_after=2
    )
    assert part.steps == 2 and not (tmp_path / "part" / "model").exists()
    with pytest.raises(ModelError, match="unfinished training run"):
        Surrogate.load(tmp_path / "part", base_model=tiny_base())
    rest = train_surrogate(sset, tmp_path / "part", cfg, base_model=tiny_base(), progress=False)
    assert rest.resumed_from == 2 and rest.steps == 4
    np.testing.assert_allclose(rest.losses, full.losses, rtol=1e-5)
    a = {n: p for n, p in full.surrogate.model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in rest.surrogate.model.named_parameters() if "lora_" in n}
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-6)
    # a different configuration refuses the old checkpoint instead of mixing runs
    train_surrogate(sset, tmp_path / "x", cfg, base_model=tiny_base(), progress=False, stop_after=2)
    other = TuneConfig(**{**cfg.to_dict(), "lr": 1e-4})
    with pytest.raises(ConfigError, match="different run.*config"):
        train_surrogate(sset, tmp_path / "x", other, base_model=tiny_base(), progress=False)
    with pytest.raises(ConfigError, match="already holds a finished surrogate"):
        train_surrogate(sset, tmp_path / "full", cfg, base_model=tiny_base(), progress=False)


def test_overlong_samples_are_skipped_and_counted(sets, tiny_base, tmp_path):
    sset = sets["behaviour"]
    res = train_surrogate(
        sset,
        tmp_path / "r",
        TuneConfig(steps=1, max_length=120, **FAST),
        base_model=tiny_base(),
        progress=False,
    )
    assert 0 < res.skipped_long < len(sset)
    with pytest.raises(DataError, match="longer than max_length"):
        train_surrogate(
            sset,
            tmp_path / "r2",
            TuneConfig(steps=1, max_length=10, **FAST),
            base_model=tiny_base(),
            progress=False,
        )


def test_batches_cover_every_sample_each_epoch():
    seen = [i for step in range(5) for i in batch_indices(step, 10, 2, seed=1)]
    assert sorted(seen) == list(range(10))
    assert batch_indices(3, 10, 2, 1) == batch_indices(3, 10, 2, 1)


def test_config_and_base_errors(tmp_path):
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        TuneConfig(steps=0)
    with pytest.raises(ConfigError, match="precision"):
        TuneConfig(precision="fp8")
    with pytest.raises(ConfigError, match="expected 'smollm2'"):
        resolve_base(tmp_path / "nothing-here")
    assert resolve_base(None)["kind"] == "gguf"


def test_empty_vectors_with_placeholders_are_refused(sets, tiny_base):
    s = sets["intention"]
    empty = SampleSet(s.samples, np.zeros((len(s.user_vectors), 0)), np.zeros((30, 0)))
    with pytest.raises(DataError, match="carry no recommender vectors"):
        Surrogate.create(TuneConfig(**FAST), empty, base_model=tiny_base())


def test_loading_needs_the_in_memory_base_it_was_trained_on(sets, tiny_base, tmp_path):
    train_surrogate(
        sets["knowledge"],
        tmp_path / "r",
        TuneConfig(steps=1, **FAST),
        base_model=tiny_base(),
        progress=False,
    )
    with pytest.raises(ModelError, match="base model passed in memory"):
        Surrogate.load(tmp_path / "r")
