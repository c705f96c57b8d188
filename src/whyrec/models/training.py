"""The generic training loop: seeded, early-stopped on validation NDCG@10, resumable.

A model hands the loop a :class:`TrainingTask` (its torch module, its batches, its loss
and its validation metric); the loop owns everything else — the optimiser, the seeded
generator used for shuffling and negative sampling, early stopping, the progress bar,
and an atomic checkpoint after every epoch. A run killed at any point resumes from the
last checkpoint and then follows exactly the path the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from whyrec import __version__
from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, ModelError
from whyrec.io import atomic_path, write_json
from whyrec.models.base import Recommender

CHECKPOINT_FILE = "checkpoint.pt"
# settings a resumed run may change: they do not alter what one epoch does
RESUMABLE_CHANGES = ("epochs", "patience")


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def thread_count() -> int:
    """Threads whyrec's compute uses: ``$WHYREC_THREADS``, else every available core."""
    env = os.environ.get("WHYREC_THREADS", "").strip()
    if not env:
        return available_cores()
    try:
        return max(1, int(env))
    except ValueError:
        raise ConfigError(f"WHYREC_THREADS must be an integer, got {env!r}") from None


def configure_threads() -> None:
    """Use every available core for torch's intra-op parallelism (``$WHYREC_THREADS`` wins).

    On a machine shared with other busy processes, fewer threads than cores can be
    much faster (OpenMP threads wait on each other); set ``WHYREC_THREADS=1`` there.
    """
    n = thread_count()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def param_groups(module: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Optimiser groups: sub-modules with ``lr_groups()`` set their own lr multipliers."""
    special: dict[int, float] = {}
    for sub in module.modules():
        if hasattr(sub, "lr_groups"):
            for params, scale in sub.lr_groups():
                for p in params:
                    special[id(p)] = scale
    groups: dict[float, list[nn.Parameter]] = {}
    for p in module.parameters():
        groups.setdefault(special.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in sorted(groups.items())]


class TrainingTask(Protocol):
    """What a model gives the loop."""

    module: nn.Module

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """One epoch of batches, in an order drawn from ``generator``."""
        ...

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """Mean loss of one batch (negatives, if any, drawn from ``generator``)."""
        ...

    def validate(self) -> float:
        """Validation NDCG@10 under full ranking (module already in eval mode)."""
        ...


@dataclass
class EpochInfo:
    """Passed to callbacks after every epoch."""

    epoch: int  # epochs finished so far (1-based)
    loss: float
    valid_ndcg10: float | None  # None when this epoch was not evaluated
    best_ndcg10: float
    best_epoch: int
    seconds: float  # wall time of this epoch (training + validation)
    stopped: bool  # early stopping triggered after this epoch


@dataclass
class LoopSettings:
    epochs: int
    lr: float
    weight_decay: float
    patience: int
    eval_every: int
    seed: int

    @classmethod
    def of(cls, config: Any) -> LoopSettings:
        """The loop settings a model's config holds (``epochs``, ``lr``, ...)."""
        c = config
        return cls(c.epochs, c.lr, c.weight_decay, c.patience, c.eval_every, c.seed)


def start_training(seed: int) -> None:
    """Before a model builds its module: the thread settings, then torch's seed (the
    module's initial weights depend on it)."""
    configure_threads()
    torch.manual_seed(seed)


def run_training(
    task: TrainingTask,
    settings: LoopSettings,
    *,
    identity: dict[str, Any],
    checkpoint_dir: Path | None = None,
    progress: bool | None = None,
    callbacks: Sequence[Callable[[EpochInfo], Any]] = (),
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``task.module`` in place; on return it holds the best validation weights.

    ``identity`` (model name, config, dataset fingerprint) is stored in the checkpoint;
    a checkpoint with a different identity is refused rather than silently mixed in.
    Returns a summary with the per-epoch log.
    """
    from tqdm.auto import tqdm

    if settings.epochs < 1 or settings.patience < 1 or settings.eval_every < 1:
        raise ConfigError("epochs, patience and eval_every must all be >= 1")
    configure_threads()
    module = task.module
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(
        param_groups(module, settings.lr), lr=settings.lr, weight_decay=settings.weight_decay
    )
    st: dict[str, Any] = {
        "epoch": 0,
        "best": float("-inf"),
        "best_epoch": 0,
        "best_state": None,
        "bad": 0,
        "stopped": False,
        "log": [],
        "elapsed": 0.0,
    }
    ckpt = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
    resumed_from = 0
    if ckpt is not None and ckpt.is_file():
        resumed_from = _resume(ckpt, identity, module, optimizer, generator, st, settings)

    bar = tqdm(
        total=settings.epochs,
        initial=min(st["epoch"], settings.epochs),
        desc=desc,
        unit="epoch",
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    if resumed_from:
        bar.write(f"resumed from checkpoint at epoch {resumed_from} ({ckpt})", file=sys.stderr)
    try:
        while st["epoch"] < settings.epochs and not st["stopped"]:
            t0 = time.perf_counter()
            mean_loss = _train_epoch(task, optimizer, generator, st["epoch"] + 1)
            st["epoch"] += 1
            val = None
            if st["epoch"] % settings.eval_every == 0 or st["epoch"] == settings.epochs:
                val = _validate(task, st, settings.patience)
            seconds = time.perf_counter() - t0
            st["elapsed"] += seconds
            info = EpochInfo(
                epoch=st["epoch"],
                loss=mean_loss,
                valid_ndcg10=val,
                best_ndcg10=st["best"],
                best_epoch=st["best_epoch"],
                seconds=seconds,
                stopped=st["stopped"],
            )
            st["log"].append(asdict(info))
            if ckpt is not None:
                _write_checkpoint(ckpt, identity, module, optimizer, generator, st)
            bar.update(1)
            postfix = {"loss": f"{info.loss:.4f}", "best": f"{st['best']:.4f}"}
            if val is not None:
                postfix["ndcg@10"] = f"{val:.4f}"
            bar.set_postfix(postfix)
            for cb in callbacks:
                cb(info)
    finally:
        bar.close()

    if st["best_state"] is not None:
        module.load_state_dict(st["best_state"])
    module.eval()
    return _summary(st, resumed_from)


class LoopTrained(Recommender):
    """A recommender whose torch module this loop trains (BPR-MF, the sequence models).

    A subclass says how to build its module and its :class:`TrainingTask`; fitting is
    the same for all: seed, build, train with the config's :class:`LoopSettings` under
    the model's checkpoint identity, then :meth:`_trained` adds the model's own facts.
    """

    module: nn.Module

    def build_module(self, dataset: Dataset) -> nn.Module:
        """The untrained torch module for ``dataset``."""
        raise NotImplementedError

    def make_task(self, dataset: Dataset) -> TrainingTask:
        """The training task (batches, loss, validation) over ``self.module``."""
        raise NotImplementedError

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must have been written for to be resumed."""
        return {
            "model": self.name,
            "config": self.config.to_dict(),
            "dataset": self.dataset_info["fingerprint"],
        }

    def _fit(self, dataset: Dataset, **loop: Any) -> None:
        """Train; ``loop`` is what :meth:`Recommender.fit` passes on (``progress``,
        ``checkpoint_dir``, ``callbacks``), handed to :func:`run_training` as is."""
        start_training(self.config.seed)
        self.module = self.build_module(dataset)
        task = self.make_task(dataset)
        self.training = run_training(
            task,
            LoopSettings.of(self.config),
            identity=self._identity(),
            desc=f"train {self.name}",
            **loop,
        )
        self._trained(task, dataset)

    def _trained(self, task: Any, dataset: Dataset) -> None:
        """After the loop: the model's own facts about the run for ``self.training``."""


def _resume(
    ckpt: Path,
    identity: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    st: dict[str, Any],
    settings: LoopSettings,
) -> int:
    """Load a checkpoint of the same identity into the run; the epoch it resumes from."""
    data = _read_checkpoint(ckpt, identity)
    module.load_state_dict(data["module"])
    optimizer.load_state_dict(data["optimizer"])
    generator.set_state(data["generator"])
    torch.set_rng_state(data["torch_rng"])
    st.update(data["state"])
    # a larger patience (or more epochs) continues a run that had stopped
    st["stopped"] = st["bad"] >= settings.patience
    return int(st["epoch"])


def _summary(st: dict[str, Any], resumed_from: int) -> dict[str, Any]:
    """What a finished run reports (``model.training``)."""
    epochs_run = len(st["log"])
    return {
        "epochs_run": epochs_run,
        "best_epoch": st["best_epoch"],
        "valid_ndcg10": st["best"] if st["best"] > float("-inf") else None,
        "stopped_early": bool(st["stopped"]),
        "train_seconds": round(st["elapsed"], 3),
        "seconds_per_epoch": round(st["elapsed"] / max(epochs_run, 1), 4),
        "resumed_from_epoch": resumed_from or None,
        "threads": torch.get_num_threads(),
        "epochs_log": st["log"],
    }


def _train_epoch(
    task: TrainingTask, optimizer: torch.optim.Optimizer, generator: torch.Generator, epoch: int
) -> float:
    """One pass over the task's batches; the mean loss (a non-finite loss stops training)."""
    task.module.train()
    total, count = 0.0, 0
    for batch in task.batches(generator):
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(batch, generator)
        if not torch.isfinite(loss):
            raise ModelError(
                f"training diverged at epoch {epoch} (loss {loss.item()}); lower the learning rate"
            )
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        count += 1
    return total / max(count, 1)


def _validate(task: TrainingTask, st: dict[str, Any], patience: int) -> float:
    """Validation NDCG@10; keeps the best weights in ``st`` and counts epochs without gain."""
    module = task.module
    module.eval()
    with torch.inference_mode():
        val = float(task.validate())
    if val > st["best"]:
        st.update(best=val, best_epoch=st["epoch"], bad=0)
        st["best_state"] = copy.deepcopy(module.state_dict())
    else:
        st["bad"] += 1
        st["stopped"] = st["bad"] >= patience
    return val


def _identity_key(identity: dict[str, Any]) -> dict[str, Any]:
    ident = copy.deepcopy(identity)
    cfg = ident.get("config", {})
    for key in RESUMABLE_CHANGES:
        cfg.pop(key, None)
    return ident


def _read_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated file cannot occur (atomic writes) but be clear
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from exc
    if _identity_key(data.get("identity", {})) != _identity_key(identity):
        theirs, ours = _identity_key(data.get("identity", {})), _identity_key(identity)
        diff = sorted(
            k
            for k in set(theirs.get("config", {})) | set(ours.get("config", {}))
            if theirs.get("config", {}).get(k) != ours.get("config", {}).get(k)
        )
        other = [
            k for k in set(theirs) | set(ours) if k != "config" and theirs.get(k) != ours.get(k)
        ]
        raise ConfigError(
            f"checkpoint {path} belongs to a different run (differs in: "
            f"{', '.join(other + diff) or 'identity'}); delete it or train into another directory"
        )
    return data


def _write_checkpoint(
    path: Path,
    identity: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    st: dict[str, Any],
) -> None:
    payload = {
        "identity": identity,
        "whyrec_version": __version__,
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": st,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    write_json(
        path.with_name("progress.json"),
        {k: v for k, v in st.items() if k not in ("best_state", "log")} | {"log": st["log"]},
    )
