import numpy as np
import pytest

from whyrec.embed import (
    EmbeddingCache,
    HashingEncoder,
    TextEncoder,
    encoder_from_config,
    get_encoder,
)
from whyrec.errors import ConfigError, ModelError


class CountingEncoder(TextEncoder):
    """Vectors derived from text length; records every text it really encodes."""

    batch_size = 2

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[str] = []

    @property
    def id(self):
        return "counting:v1"

    @property
    def dim(self):
        return 3

    def config(self):
        return {"kind": "counting"}

    def _encode(self, texts):
        self.seen += texts
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_encode_dedups_keeps_order_and_batches():
    enc = CountingEncoder(cache=False)
    out = enc.encode(["aa", "b", "aa", "cccc", "b"], progress=False)
    assert out.dtype == np.float32 and out.shape == (5, 3)
    assert out[:, 0].tolist() == [2, 1, 2, 4, 1]
    assert enc.seen == ["aa", "b", "cccc"]  # each distinct text once
    assert enc.last_encoded == 3


def test_an_encoder_that_pads_batches_gets_the_shortest_texts_first():
    enc = CountingEncoder(cache=False)
    enc.pads_batches = True
    out = enc.encode(["cccc", "a", "bb", "ddd", "a"], progress=False)
    assert enc.seen == ["a", "bb", "ddd", "cccc"]  # batches of similar lengths
    assert out[:, 0].tolist() == [4, 1, 2, 3, 1]  # rows in the order asked for


def test_second_run_encodes_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    first = CountingEncoder(cache=cache)
    a = first.encode(["x", "yy", "a b"], progress=False)
    second = CountingEncoder(cache=EmbeddingCache(tmp_path / "c.sqlite"))
    b = second.encode(["yy", "x", "a b", "new"], progress=False)
    assert second.seen == ["new"] and second.last_encoded == 1
    np.testing.assert_array_equal(b[:3], a[[1, 0, 2]])
    assert cache.count("counting:v1") == 4


def test_default_cache_lives_under_whyrec_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path))
    enc = CountingEncoder()
    enc.encode(["hello"], progress=False)
    assert (tmp_path / "embeddings" / "cache.sqlite").is_file()


def test_cache_is_keyed_by_encoder_id(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put("enc-a", ["t"], np.ones((1, 3)))
    assert cache.get("enc-b", ["t"]) == {}
    assert cache.get("enc-a", ["t", "u", "t"]).keys() == {0, 2}


def test_empty_and_bad_input():
    enc = CountingEncoder(cache=False)
    assert enc.encode([], progress=False).shape == (0, 3)
    with pytest.raises(TypeError, match="single string"):
        enc.encode("abc")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["a", 3])


def test_wrong_shape_from_backend_is_an_error():
    class Bad(CountingEncoder):
        def _encode(self, texts):
            return np.zeros((len(texts) + 1, 3))

    with pytest.raises(ModelError, match="returned shape"):
        Bad(cache=False).encode(["a"], progress=False)


def test_hashing_encoder_is_deterministic_and_normalised():
    enc = HashingEncoder(32)
    v = enc.encode(["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)"], progress=False)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        v,
        HashingEncoder(32).encode(
            ["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)"], progress=False
        ),
    )
    assert v[0] @ v[1] > v[0] @ v[2]  # shared words -> closer
    assert encoder_from_config(enc.config()).id == enc.id


def test_factory_specs():
    assert get_encoder("hashing:16").dim == 16
    with pytest.raises(ConfigError, match="unknown encoder"):
        get_encoder("word2vec")
    with pytest.raises(ConfigError, match="unknown encoder kind"):
        encoder_from_config({"kind": "glove"})
    with pytest.raises(ConfigError, match="modules.json"):
        get_encoder("st:/nonexistent/model")
