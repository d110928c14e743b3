"""The epoch loop every neural model shares: progress, validation, early stopping, checkpoints."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# (fit name, monitor, epoch, that epoch's record) after every validated epoch. A tuning search
# listens to prune a trial early; it may raise to stop training (the exception propagates).
EpochListener = Callable[[str, str, int, dict[str, float]], None]
_LISTENER: ContextVar[EpochListener | None] = ContextVar("epoch_listener", default=None)


@contextlib.contextmanager
def listening(listener: EpochListener) -> Iterator[None]:
    """Call ``listener`` after each validated epoch of every ``fit`` run inside this block."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


@dataclass
class FitHistory:
    """Per-epoch loss and validation metrics, and where the best epoch was."""

    model: str
    monitor: str = "ndcg@10"
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best: float = float("-inf")
    stopped_early: bool = False
    seconds: float = 0.0


def adam(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel: the same update, in one pass over the parameters rather than a
    dozen. On one CPU core it took a 10k-item Mult-DAE step from 80 ms to 13 ms per batch."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def user_batches(matrix: sp.csr_matrix, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches of the users who have at least one rating."""
    users = np.flatnonzero(np.diff(matrix.indptr) > 0)
    rng.shuffle(users)
    for start in range(0, len(users), batch_size):
        yield users[start : start + batch_size]


def corrupt(x: torch.Tensor, drop_rate: float) -> torch.Tensor:
    """Denoising input: hide a random ``drop_rate`` share of the observed entries."""
    return x * (torch.rand_like(x) >= drop_rate).to(x.dtype)


def multinomial_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over users of -log p(target item) under a softmax over the whole catalogue (Mult-DAE).

    Users without a target item in this batch (e.g. no liked item) contribute nothing.
    """
    counts = target.sum(1)
    per_user = -(torch.log_softmax(logits, dim=1) * target).sum(1) / counts.clamp(min=1)
    return per_user.sum() / (counts > 0).sum().clamp(min=1)


def liked_targets(x: torch.Tensor, high: float, threshold: float) -> torch.Tensor:
    """0/1 liked indicators from ratings normalised by the top of the scale (0 = unrated)."""
    return (x * high >= threshold - 1e-6).to(x.dtype)


def fit(
    module: torch.nn.Module,
    name: str,
    run_epoch: Callable[[int], float],
    validate: Callable[[], dict[str, float]] | None,
    *,
    max_epochs: int,
    patience: int,
    checkpoint: Path | None = None,
    progress: bool = True,
    monitor: str = "ndcg@10",
    lower_is_better: bool = False,
) -> FitHistory:
    """Run epochs until ``patience`` epochs pass without a better validation ``monitor``.

    The module ends holding its best epoch's weights; without validation it keeps the last.
    """
    history = FitHistory(name, monitor)
    sign = -1.0 if lower_is_better else 1.0
    best_state = None
    started = time.perf_counter()
    bar = tqdm(range(max_epochs), desc=name, disable=not progress, leave=False)
    for epoch in bar:
        module.train()
        record = {"epoch": float(epoch), "loss": float(run_epoch(epoch))}
        if validate is not None:
            module.eval()
            with torch.no_grad():
                record.update(validate())
        history.epochs.append(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
        log.debug("epoch model=%s %s", name, " ".join(f"{k}={v:.5g}" for k, v in record.items()))
        if validate is None:
            continue
        listener = _LISTENER.get()
        if listener is not None:
            listener(name, monitor, epoch, record)
        if sign * record[monitor] > sign * history.best or history.best_epoch < 0:
            history.best, history.best_epoch = record[monitor], epoch
            best_state = copy.deepcopy(module.state_dict())
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save(best_state, checkpoint)
        elif epoch - history.best_epoch >= patience:
            history.stopped_early = True
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    history.seconds = time.perf_counter() - started
    log.info(
        "trained model=%s epochs=%d best_epoch=%d best_%s=%.4f seconds=%.1f",
        name,
        len(history.epochs),
        history.best_epoch,
        monitor,
        history.best,
        history.seconds,
    )
    return history
