"""The sample directory format and its exports (OpenAI chat JSONL, Hugging Face datasets)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whyrec.align.builders import AlignmentConfig, KnowledgeConfig, build_alignment, build_knowledge
from whyrec.align.samples import SampleSet, export_openai, to_hf_dataset
from whyrec.errors import DataError


@pytest.fixture(scope="module")
def mixed(f_model, ring_ds):
    behaviour = build_alignment(
        f_model, ring_ds, np.arange(8), AlignmentConfig(form="behaviour", n_samples=20)
    )
    hybrid = build_alignment(
        f_model, ring_ds, np.arange(8, 16), AlignmentConfig(form="hybrid", n_samples=20)
    )
    return behaviour, hybrid


def test_round_trip_keeps_samples_and_vectors(mixed, tmp_path):
    _, hybrid = mixed
    hybrid.save(tmp_path / "set")
    back = SampleSet.load(tmp_path / "set")
    assert [s.to_record() for s in back] == [s.to_record() for s in hybrid]
    np.testing.assert_array_equal(back.user_vectors, hybrid.user_vectors)
    np.testing.assert_array_equal(back.item_vectors, hybrid.item_vectors)
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["n_samples"] == 20 and manifest["recommender"] == "sasrec"
    assert sum(manifest["counts"].values()) == 20


def test_openai_export_is_the_chat_fine_tuning_format(mixed, tmp_path):
    behaviour, hybrid = mixed
    both = SampleSet.concat([behaviour, hybrid])
    report = export_openai(both, tmp_path / "ft.jsonl")
    lines = (tmp_path / "ft.jsonl").read_text().splitlines()
    n_vec = sum(s.has_placeholders for s in both)
    assert report == {"file": "ft.jsonl", "written": 40 - n_vec, "skipped_with_placeholders": n_vec}
    assert len(lines) == 40 - n_vec
    for line in lines:
        rec = json.loads(line)
        assert list(rec) == ["messages"]
        assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in rec["messages"])
    export_openai(both, tmp_path / "all.jsonl", include_placeholders=True)
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 40


def test_concat_reindexes_user_rows(mixed):
    behaviour, hybrid = mixed
    both = SampleSet.concat([behaviour, hybrid])
    assert len(both.user_vectors) == len(behaviour.user_vectors) + len(hybrid.user_vectors)
    offset = len(behaviour.user_vectors)
    for a, b in zip(both.samples[20:], hybrid.samples, strict=True):
        assert [(k, r - offset if k == "user" else r) for k, r in a.vectors] == b.vectors
        for (k, r), (_, r0) in zip(a.vectors, b.vectors, strict=True):
            table_a = both.user_vectors if k == "user" else both.item_vectors
            table_b = hybrid.user_vectors if k == "user" else hybrid.item_vectors
            np.testing.assert_array_equal(table_a[r], table_b[r0])


def test_hugging_face_dataset_export(mixed, ring_ds, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, hybrid = mixed
    ds = to_hf_dataset(hybrid)
    assert len(ds) == 20 and set(ds.column_names) == {
        "messages",
        "task",
        "form",
        "vector_kinds",
        "vector_rows",
        "meta",
    }
    row = ds[0]
    assert row["messages"][2]["content"] == hybrid.samples[0].answer
    assert row["vector_kinds"] == [k for k, _ in hybrid.samples[0].vectors]
    assert json.loads(row["meta"]) == hybrid.samples[0].meta
    # save() writes it next to the JSONL files, readable with load_from_disk
    knowledge = build_knowledge(ring_ds, np.arange(20), KnowledgeConfig(n_samples=12))
    knowledge.save(tmp_path / "k")
    back = datasets.load_from_disk(str(tmp_path / "k" / "hf"))
    assert len(back) == 12 and set(back["form"]) == {"text"}
    assert len((tmp_path / "k" / "openai.jsonl").read_text().splitlines()) == 12


def test_bad_sample_files_name_file_line_and_field(mixed, tmp_path):
    _, hybrid = mixed
    hybrid.save(tmp_path / "set", export=False)
    path = tmp_path / "set" / "samples.jsonl"
    lines = path.read_text().splitlines()

    rec = json.loads(lines[2])
    rec["vectors"] = rec["vectors"][:-1] if rec["vectors"] else [["user", 0]]
    path.write_text("\n".join([*lines[:2], json.dumps(rec), *lines[3:]]) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:3: field 'vectors'.*placeholders"):
        SampleSet.load(tmp_path / "set")

    path.write_text("\n".join([lines[0], "{not json"]) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:2: not valid JSON"):
        SampleSet.load(tmp_path / "set")

    rec = json.loads(lines[0])
    rec["form"] = "telepathy"
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:1: field 'form'"):
        SampleSet.load(tmp_path / "set")

    rec = json.loads(lines[0])
    rec["messages"] = rec["messages"][:2]
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError, match="field 'messages'"):
        SampleSet.load(tmp_path / "set")


def test_vector_rows_out_of_range_are_refused(mixed):
    _, hybrid = mixed
    broken = SampleSet(hybrid.samples, hybrid.user_vectors[:1], hybrid.item_vectors)
    with pytest.raises(DataError, match="user vector row"):
        broken.check()
