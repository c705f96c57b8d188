"""Decode a few tokens with the packaged model: exits non-zero (or crashes) when the
llama-cpp-python build cannot run on this CPU. Used by scripts/bootstrap.sh."""

from llama_cpp import Llama

from whyrec.llm.backends.local import packaged_model_path

llm = Llama(str(packaged_model_path()), n_ctx=256, n_threads=1, verbose=False)
out = llm.create_completion("Hello", max_tokens=3, temperature=0.0)
assert out["choices"][0]["text"] is not None
