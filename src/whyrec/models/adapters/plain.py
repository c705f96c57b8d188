"""Two adapters for a team's own model: a Python function and a TorchScript file.

Both receive whyrec's internal item indices (rows of the dataset's item table, oldest
first). A model that numbers items its own way passes ``item_ids`` — the source item id
of each of its output columns — and whyrec maps between the two.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.errors import ModelError
from whyrec.io import write_json
from whyrec.models.outside import SETTINGS_FILE, ItemMap, import_object, read_adapter_settings


def _item_map(model: Any, item_ids: Sequence[Any] | None) -> ItemMap:
    if item_ids is None:
        return ItemMap.identity(int(model.n_items))
    return ItemMap.from_ids([str(i) for i in model.item_ids], item_ids)


class _Mapped:
    """Shared by both: input histories mapped to the model's columns, outputs back."""

    adapter = "plain"
    item_map: ItemMap | None = None

    def __init__(
        self, item_ids: Sequence[Any] | None, uses_history: bool, attribution_window: int
    ) -> None:
        self.item_ids = None if item_ids is None else [str(i) for i in item_ids]
        self.uses_history = bool(uses_history)
        #: how many of the most recent history items evidence tries removing (0: all)
        self.attribution_window = int(attribution_window)

    def bind(self, model: Any) -> None:
        """Called by :meth:`OutsideModel.wrap` callers (and :meth:`load`) with the
        catalogue, so ids can be mapped."""
        self.item_map = _item_map(model, self.item_ids)

    def _inputs(self, histories: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.item_map is None or self.item_ids is None:
            return [np.asarray(h, dtype=np.int64) for h in histories]
        return [self.item_map.to_columns(h) for h in histories]

    def _outputs(self, scores: Any, rows: int) -> Any:
        if self.item_map is None or self.item_ids is None:
            return scores  # checked by OutsideModel like any scorer's output
        try:
            scores = np.asarray(scores, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{self.adapter}: scores are not numbers ({exc})") from exc
        if scores.ndim != 2 or scores.shape != (rows, len(self.item_ids)):
            raise ModelError(
                f"{self.adapter}: the model returned scores of shape {scores.shape}; "
                f"expected ({rows}, {len(self.item_ids)}) — one column per entry of item_ids"
            )
        return self.item_map.to_items(scores)

    def _settings(self) -> dict[str, Any]:
        return {
            "item_ids": self.item_ids,
            "uses_history": self.uses_history,
            "attribution_window": self.attribution_window,
        }


class CallableScorer(_Mapped):
    """``fn(histories) -> scores``: a list of int arrays in, an ``(n, n_items)`` array out.

    Saved as the function's import path, so it must be a module-level function (a lambda
    or a closure can be explained in-process but not written to a model directory).
    Evidence tries removing every history item (``attribution_window=0``); a function that
    reads only the last N items can say ``attribution_window=N`` to save the calls.
    """

    adapter = "callable"

    def __init__(
        self,
        fn: Callable[[list[np.ndarray]], Any],
        *,
        item_ids: Sequence[Any] | None = None,
        uses_history: bool = True,
        attribution_window: int = 0,
    ) -> None:
        if not callable(fn):
            raise ModelError(f"callable adapter: {fn!r} is not callable")
        super().__init__(item_ids, uses_history, attribution_window)
        self.fn = fn

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None) -> np.ndarray:
        inputs = self._inputs(histories)
        return self._outputs(self.fn(inputs), len(inputs))

    def save(self, directory: Path) -> None:
        path = f"{getattr(self.fn, '__module__', '')}:{getattr(self.fn, '__qualname__', '')}"
        if "<" in path or path.startswith(("__main__:", ":")):
            raise ModelError(
                f"callable adapter: {path!r} cannot be saved — a model directory refers to the "
                "function by import path, so it must be a module-level function in an "
                "importable module"
            )
        write_json(directory / SETTINGS_FILE, {**self._settings(), "function": path})

    @classmethod
    def load(cls, directory: Path, model: Any) -> CallableScorer:
        settings = read_adapter_settings(directory, ["uses_history"])
        fn = import_object(str(settings.get("function", "")), what="callable adapter function")
        scorer = cls(
            fn,
            item_ids=settings.get("item_ids"),
            uses_history=settings["uses_history"],
            attribution_window=settings.get("attribution_window", 0),
        )
        scorer.bind(model)
        return scorer


class TorchScriptScorer(_Mapped):
    """A TorchScript module ``forward(items, lengths) -> scores``.

    ``items`` is an ``int64`` tensor ``(batch, length)``: each row a history, oldest first,
    padded at the end with ``-1``; ``lengths`` (``int64``, ``(batch,)``) the true lengths.
    The module returns ``(batch, n_items)`` floats. Histories longer than ``max_len`` keep
    their most recent items. Runs on the CPU, ``batch_size`` histories per call.
    """

    adapter = "torchscript"
    FILE = "model.pt"

    def __init__(
        self,
        module: Any,
        *,
        item_ids: Sequence[Any] | None = None,
        max_len: int = 200,
        batch_size: int = 256,
        uses_history: bool = True,
    ) -> None:
        import torch

        super().__init__(item_ids, uses_history, max_len)  # older items never count
        if isinstance(module, str | Path):
            module = _load_torchscript(Path(module))
        if not isinstance(module, torch.jit.ScriptModule):
            raise ModelError(
                f"torchscript adapter: expected a TorchScript module (torch.jit.script or "
                f"torch.jit.trace), got {type(module).__name__}"
            )
        self.module = module.eval()
        self.max_len = int(max_len)
        self.batch_size = int(batch_size)

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None) -> np.ndarray:
        import torch

        inputs = self._inputs(histories)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(inputs), self.batch_size):
                chunk = [h[-self.max_len :] for h in inputs[start : start + self.batch_size]]
                width = max(1, max(len(h) for h in chunk))
                items = torch.full((len(chunk), width), -1, dtype=torch.int64)
                for r, h in enumerate(chunk):
                    items[r, : len(h)] = torch.from_numpy(np.asarray(h, dtype=np.int64))
                lengths = torch.tensor([len(h) for h in chunk], dtype=torch.int64)
                out = self.module(items, lengths)
                if not isinstance(out, torch.Tensor):
                    raise ModelError(
                        f"torchscript adapter: forward returned {type(out).__name__}, "
                        "expected a tensor of scores"
                    )
                rows.append(out.detach().float().cpu().numpy())
        scores = np.concatenate(rows) if rows else np.empty((0, 0), np.float32)
        return self._outputs(scores, len(inputs))

    def save(self, directory: Path) -> None:
        self.module.save(str(directory / self.FILE))
        write_json(
            directory / SETTINGS_FILE,
            {**self._settings(), "max_len": self.max_len, "batch_size": self.batch_size},
        )

    @classmethod
    def load(cls, directory: Path, model: Any) -> TorchScriptScorer:
        settings = read_adapter_settings(directory, ["uses_history"])
        scorer = cls(
            _load_torchscript(directory / cls.FILE),
            item_ids=settings.get("item_ids"),
            max_len=settings.get("max_len", 200),
            batch_size=settings.get("batch_size", 256),
            uses_history=settings.get("uses_history", True),
        )
        scorer.bind(model)
        return scorer


class ImportedScorer:
    """A saved outside model that refers to the import path it was built from.

    Written when a model built from ``module:object`` is saved and its scorer cannot
    save itself (e.g. a function made inside a factory): loading imports the object again
    and calls it with the dataset named in the manifest (which must still be there, with
    the same fingerprint)."""

    @classmethod
    def load(cls, directory: Path, model: Any) -> Any:
        from whyrec.data import load_dataset
        from whyrec.models.outside import model_from_import

        path = directory / SETTINGS_FILE
        try:
            spec = str(json.loads(path.read_text(encoding="utf-8"))["import_path"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"{path}: expected {{'import_path': 'module:object'}} ({exc})"
            ) from exc
        info = model.dataset_info
        where = info.get("path") if info.get("path") and Path(info["path"]).is_dir() else None
        dataset = load_dataset(Path(where) if where else info["name"])
        return model_from_import(spec, dataset).scorer


def _load_torchscript(path: Path) -> Any:
    import torch

    if not path.is_file():
        raise ModelError(f"torchscript adapter: {path} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"torchscript adapter: {path} is not a TorchScript file ({exc})") from exc
