"""Seeded, reproducible, resumable training; the generic loop and its hooks."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from whyrec.errors import ConfigError
from whyrec.models import SASRec, create_model
from whyrec.models.backbones import SequentialModule
from whyrec.models.sequential import training_windows

CFG = {"dim": 16, "max_len": 12, "epochs": 6, "patience": 6, "batch_size": 16, "lr": 0.01}


def weights(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_model_other_seed_other_model(seq_ds):
    a = create_model("sasrec", **CFG).fit(seq_ds, progress=False)
    b = create_model("sasrec", **CFG).fit(seq_ds, progress=False)
    c = create_model("sasrec", **CFG, seed=1).fit(seq_ds, progress=False)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))
    assert a.training["epochs_log"] == b.training["epochs_log"] or [
        e["loss"] for e in a.training["epochs_log"]
    ] == [e["loss"] for e in b.training["epochs_log"]]


def test_early_stopping_keeps_the_best_epoch(seq_ds):
    logs = []
    model = create_model("sasrec", **{**CFG, "epochs": 60, "patience": 2, "lr": 0.05})
    model.fit(seq_ds, progress=False, callbacks=[logs.append])
    t = model.training
    vals = [e.valid_ndcg10 for e in logs]
    assert t["valid_ndcg10"] == max(vals)
    assert t["best_epoch"] == 1 + int(np.argmax(vals))
    if t["stopped_early"]:
        assert len(logs) == t["best_epoch"] + 2  # patience 2
    # the restored weights are the best epoch's: validation reproduces its score
    from whyrec.models.sequential import SequenceTask

    task = SequenceTask(model.module, seq_ds, model.config)
    with torch.inference_mode():
        assert task.validate() == pytest.approx(t["valid_ndcg10"], abs=1e-6)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(seq_ds, tmp_path):
    full = create_model("sasrec", **CFG).fit(seq_ds, progress=False)

    def stop_after_3(info):
        if info.epoch == 3:
            raise Interrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        create_model("sasrec", **CFG).fit(
            seq_ds, progress=False, checkpoint_dir=ckpt, callbacks=[stop_after_3]
        )
    assert (ckpt / "checkpoint.pt").is_file() and (ckpt / "progress.json").is_file()
    resumed = create_model("sasrec", **CFG).fit(seq_ds, progress=False, checkpoint_dir=ckpt)
    assert resumed.training["resumed_from_epoch"] == 3
    assert same(weights(full), weights(resumed))
    assert [e["loss"] for e in resumed.training["epochs_log"]] == [
        e["loss"] for e in full.training["epochs_log"]
    ]


def test_checkpoint_of_another_run_is_refused(seq_ds, tmp_path):
    ckpt = tmp_path / "ckpt"
    create_model("sasrec", **{**CFG, "epochs": 1}).fit(seq_ds, progress=False, checkpoint_dir=ckpt)
    with pytest.raises(ConfigError, match="different run.*dim"):
        create_model("sasrec", **{**CFG, "dim": 8}).fit(seq_ds, progress=False, checkpoint_dir=ckpt)
    # more epochs is a legitimate continuation
    more = create_model("sasrec", **{**CFG, "epochs": 2}).fit(
        seq_ds, progress=False, checkpoint_dir=ckpt
    )
    assert more.training["resumed_from_epoch"] == 1 and more.training["epochs_run"] == 2


KILLABLE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import pattern_dataset
    from whyrec.models import create_model
    slow = sys.argv[2] == "slow"
    def pace(info):
        print("epoch", info.epoch, flush=True)
        if slow:
            time.sleep(0.5)
    m = create_model("sasrec", **{cfg!r}).fit(
        pattern_dataset(), progress=False, checkpoint_dir=sys.argv[1], callbacks=[pace]
    )
    m.save(sys.argv[1] + "-model")
    print("resumed_from", m.training["resumed_from_epoch"], flush=True)
    """
)


def test_killed_process_resumes_from_its_checkpoint(tmp_path):
    cfg = {**CFG, "epochs": 8, "patience": 8}
    script = KILLABLE.format(tests=str(Path(__file__).parent), cfg=cfg)
    env = {**os.environ, "WHYREC_THREADS": "1"}
    ckpt = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(ckpt), "slow"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    # kill -9 somewhere after the third epoch: possibly mid-epoch, mid-checkpoint
    for line in proc.stdout:
        if line.strip() == "epoch 3":
            time.sleep(0.25)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (ckpt / "checkpoint.pt").is_file()
    assert not (tmp_path / "run-model").exists()

    out = subprocess.run(
        [sys.executable, "-c", script, str(ckpt), "fast"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    resumed_from = int(out.stdout.split("resumed_from")[1].split()[0])
    assert resumed_from >= 3
    epochs_run = [
        int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("epoch")
    ]
    first_epoch_run = epochs_run[0]
    assert first_epoch_run == resumed_from + 1  # nothing before the checkpoint was redone

    clean = tmp_path / "clean"
    ref = subprocess.run(
        [sys.executable, "-c", script, str(clean), "fast"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    from whyrec.models import load_model

    a, b = load_model(str(ckpt) + "-model"), load_model(str(clean) + "-model")
    assert same(weights(a), weights(b))


def test_training_windows_cover_every_pair():
    seqs = [np.arange(10), np.array([3]), np.array([4, 5])]
    x, y, users = training_windows(seqs, max_len=4)
    pairs = {
        (int(a), int(b))
        for xr, yr in zip(x, y, strict=True)
        for a, b in zip(xr, yr, strict=True)
        if b
    }
    want = {(i + 1, i + 2) for i in range(9)} | {(5, 6)}  # +1 shift: row 0 is padding
    assert pairs == want
    assert users.tolist() == [0, 0, 0, 2]  # 9 pairs in windows of 4, 4, 1; user 1 has none
    assert (x[:, -1] != 0).all()  # left-padded: last column is always real


class UserBiasModule(SequentialModule):
    """What LANE does, in miniature: queries depend on the user, not only the sequence."""

    def __init__(self, base, n_users):
        super().__init__(base.items, base.backbone)
        self.user_vec = torch.nn.Embedding(n_users, base.backbone.dim)
        torch.nn.init.zeros_(self.user_vec.weight)
        self.users_seen = []

    def query(self, seq, users=None, table=None):
        h = self.hidden(seq, table)
        assert users is not None and users.shape == (seq.shape[0],)
        self.users_seen.append(users.clone())
        return h + self.user_vec(users)[:, None, :]


class UserSASRec(SASRec):
    name = "sasrec-user"

    def build_module(self, dataset, state=None):
        return UserBiasModule(super().build_module(dataset, state), self.n_users)


def test_a_module_subclass_plugs_into_the_generic_loop(seq_ds, tmp_path):
    model = UserSASRec(**{**CFG, "epochs": 3}).fit(seq_ds, progress=False)
    seen = torch.cat(model.module.users_seen)
    assert set(seen.tolist()) >= set(range(5))
    assert model.module.user_vec.weight.abs().sum() > 0  # trained through the hook
    u = seq_ds.user_index("u5")
    s_user = model.score(seq_ds.user_sequences()[u], user=u)
    s_other = model.score(seq_ds.user_sequences()[u], user=(u + 1) % seq_ds.n_users)
    assert not np.allclose(s_user, s_other)
    assert model.query_states(seq_ds.user_sequences()[u], user=u).shape == (
        min(len(seq_ds.user_sequences()[u]), CFG["max_len"]),
        CFG["dim"],
    )


def test_threads_follow_the_environment(monkeypatch):
    from whyrec.models.training import configure_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("WHYREC_THREADS", "1")
        configure_threads()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("WHYREC_THREADS", "many")
        with pytest.raises(ConfigError, match="WHYREC_THREADS"):
            configure_threads()
    finally:
        torch.set_num_threads(before)


def test_a_larger_patience_continues_a_stopped_run(seq_ds, tmp_path):
    ckpt = tmp_path / "ckpt"
    cfg = {**CFG, "epochs": 40, "patience": 1, "lr": 0.05}
    first = create_model("sasrec", **cfg).fit(seq_ds, progress=False, checkpoint_dir=ckpt)
    assert first.training["stopped_early"] and first.training["epochs_run"] < 40
    again = create_model("sasrec", **cfg).fit(seq_ds, progress=False, checkpoint_dir=ckpt)
    assert again.training["epochs_run"] == first.training["epochs_run"]  # nothing to do
    more = create_model("sasrec", **{**cfg, "patience": 4}).fit(
        seq_ds, progress=False, checkpoint_dir=ckpt
    )
    assert more.training["epochs_run"] > first.training["epochs_run"]
