"""Two processes writing the same cache at once must not lose or corrupt vectors."""

import subprocess
import sys
import textwrap

import numpy as np

from whyrec.embed import EmbeddingCache

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from whyrec.embed import EmbeddingCache
    cache = EmbeddingCache(sys.argv[1])
    offset = int(sys.argv[2])
    for round_ in range(20):
        texts = [f"text {i}" for i in range(offset + round_ * 10, offset + round_ * 10 + 40)]
        vecs = np.array([[float(t.split()[1]), 1.0] for t in texts], dtype=np.float32)
        cache.put("enc", texts, vecs)
    """
)


def test_concurrent_writers(tmp_path):
    path = tmp_path / "cache.sqlite"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(off)]) for off in (0, 100)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    cache = EmbeddingCache(path)
    texts = [f"text {i}" for i in range(0, 330)]
    got = cache.get("enc", texts)
    assert len(got) == 330
    for i, vec in got.items():
        np.testing.assert_array_equal(vec, [float(i), 1.0])
