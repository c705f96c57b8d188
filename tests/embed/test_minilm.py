"""The packaged all-MiniLM-L6-v2, loaded from the wheel with no network at all."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from whyrec.embed import get_encoder
    enc = get_encoder()
    titles = ["Toy Story (1995)", "Toy Story 2 (1999)", "Schindler's List (1993)"]
    v = enc.encode(titles, progress=False)
    first = enc.last_encoded
    enc2 = get_encoder()
    again = enc2.encode(titles, progress=False)
    print(json.dumps({
        "id": enc.id, "dim": enc.dim, "shape": list(v.shape), "dtype": str(v.dtype),
        "norms": np.linalg.norm(v, axis=1).tolist(),
        "sim_sequel": float(v[0] @ v[1]), "sim_other": float(v[0] @ v[2]),
        "first": first, "second": enc2.last_encoded, "same": bool(np.array_equal(v, again)),
        "config": enc.config(),
    }))
    """
)


def test_minilm_offline(tmp_path):
    env = dict(os.environ)
    # any attempt to reach a hub or the internet fails fast
    env.update(
        WHYREC_HOME=str(tmp_path),
        HF_ENDPOINT="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HF_HOME=str(tmp_path / "hf"),
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["dim"] == 384 and res["shape"] == [3, 384] and res["dtype"] == "float32"
    assert all(abs(n - 1) < 1e-4 for n in res["norms"])
    assert res["sim_sequel"] > res["sim_other"] + 0.2
    assert res["first"] == 3 and res["second"] == 0 and res["same"]
    assert res["id"].startswith("sentence-transformers:all-MiniLM-L6-v2:")
    assert res["config"] == {"kind": "minilm", "normalize": True}
    assert (tmp_path / "embeddings" / "cache.sqlite").is_file()
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))
