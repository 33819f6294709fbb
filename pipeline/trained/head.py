"""The adaptation layers and their training schedule (docs/method.md 1.4); how trained layers
are saved and read back is `pipeline.trained.trained_layers`.

FCa (2048, ReLU) + FCb (C + 1) with dropout 0.5 before each linear layer; outputs are logits over
``0 = background, 1..C = classes`` (softmax at use). SGD with momentum, mini-batches reshuffled
every epoch, learning rate divided by 10 each time the hold-out loss stops improving, a given
number of times, then stop; the weights of the best hold-out epoch are kept.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.params import Head as HeadParams
from pipeline.core.scratch_rows import DiskRows
from pipeline.trained.dropout import UniformDropout


def build_head(
    dim: int,
    n_outputs: int,
    *,
    layers: int = 2,
    hidden: int = 2048,
    dropout: float = 0.5,
    seed: int = 0,
) -> nn.Sequential:
    """The adaptation layers from `dim`-d descriptors to `n_outputs` logits, initialised from
    `seed` (the global torch RNG is left untouched).

    ``layers = 2`` is the paper's FCa + FCb; 1 is FCb alone, 3 adds a second hidden layer
    (the paper's ablation). Dropout (`UniformDropout`) precedes every linear layer.
    """
    if layers not in (1, 2, 3):
        raise PipelineError(f"head.layers: {layers} is not 1, 2 or 3")
    widths = [dim] + [hidden] * (layers - 1) + [n_outputs]
    modules: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            modules += [UniformDropout(dropout), nn.Linear(a, b)]
            if k < layers - 1:
                modules.append(nn.ReLU(inplace=True))
    return nn.Sequential(*modules)


def holdout_mask(image_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of rows whose image belongs to the hold-out set.

    The ``round(fraction * n_images)`` images (at least one, and one fewer than all) with the
    smallest hash of ``(seed, image_id)`` are held out, so all patches of an image are on the
    same side and the split is the same on every machine and in any row order.
    """
    unique, inverse = np.unique(np.asarray(image_ids, dtype=str), return_inverse=True)
    draws = np.array(
        [
            int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "little")
            for i in unique
        ]
    )
    n_held = min(max(1, round(fraction * len(unique))), len(unique) - 1)
    held = np.zeros(len(unique), bool)
    held[np.argsort(draws, kind="stable")[:n_held]] = True
    return held[inverse]


@dataclass(frozen=True)
class EpochLog:
    """One epoch of training: losses are mean cross-entropy, accuracies fractions."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float

    def line(self, accuracy: str = "acc") -> str:
        """The epoch as one log line; `accuracy` names what the accuracies count."""
        return (
            f"epoch {self.epoch} lr {self.lr:.0e}: train loss {self.train_loss:.4f} {accuracy} "
            f"{self.train_accuracy:.3f}, hold-out loss {self.val_loss:.4f} {accuracy} "
            f"{self.val_accuracy:.3f}"
        )


def epoch_logger(accuracy: str = "acc") -> Callable[[EpochLog], None]:
    """A per-epoch callback that logs each epoch as one line (`EpochLog.line`) on the
    ``pipeline`` logger; `accuracy` names what the accuracies count."""
    log = logging.getLogger("pipeline")

    def log_epoch(entry: EpochLog) -> None:
        log.info("%s", entry.line(accuracy))

    return log_epoch


Prepare = Callable[[torch.Tensor], torch.Tensor]  # a batch on the device -> the module's input
Rows = torch.Tensor | DiskRows  # inputs [N, ...], indexed by a slice or an index tensor


def as_float(batch: torch.Tensor) -> torch.Tensor:
    """Descriptors (float16 or 32) as float32: the input of adaptation layers."""
    return batch.float()


@torch.inference_mode()
def evaluate_head(
    head: nn.Module,
    x: Rows,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device,
    prepare: Prepare = as_float,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `head` (eval mode) on inputs `x` (each batch moved
    to `device` and passed through `prepare`), labels `y`."""
    head.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = prepare(x[start : start + batch_size].to(device))
        yb = y[start : start + batch_size].to(device)
        logits = head(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(1) == yb).sum())
    return total_loss / max(len(x), 1), correct / max(len(x), 1)


def train_head(
    head: nn.Module,
    train: tuple[Rows, torch.Tensor],
    val: tuple[Rows, torch.Tensor],
    config: HeadParams,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None = None,
    prepare: Prepare = as_float,
    lr_key: str = "head.lr",
) -> list[EpochLog]:
    """Train `head` in place on ``(inputs [N, ...], labels [N] int64)`` with cross-entropy, on
    the schedule of `train_on_plateaus`; each batch is moved to `device` and passed through
    `prepare` (default: descriptors as float32). Training loss and accuracy in the log are
    running means over the epoch's steps (no second pass over the training rows); hold-out
    ones are measured after it. Returns the per-epoch log."""
    if len(val[0]) == 0:
        raise PipelineError("head.val_fraction: the hold-out set is empty; raise the fraction")
    x, y = train
    order_rng = torch.Generator().manual_seed(config.seed)
    running: dict[str, float] = {}

    def one_epoch(optimiser: torch.optim.Optimizer) -> None:
        order = torch.randperm(len(x), generator=order_rng)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        right = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, len(x), config.batch_size):
            rows = order[start : start + config.batch_size]
            logits = head(prepare(x[rows].to(device)))
            target = y[rows].to(device)
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += loss.detach() * len(rows)
            right += (logits.detach().argmax(1) == target).sum()
        running["loss"] = float(loss_sum) / max(len(x), 1)
        running["accuracy"] = int(right) / max(len(x), 1)

    def measure() -> tuple[float, float, float, float]:
        val_loss, val_accuracy = evaluate_head(head, *val, config.batch_size, device, prepare)
        return running["loss"], running["accuracy"], val_loss, val_accuracy

    return train_on_plateaus(head, config, device, one_epoch, measure, on_epoch, lr_key)


def sgd(module: nn.Module, config: HeadParams) -> torch.optim.SGD:
    """The optimiser of every trained layer: SGD with `config`'s lr, momentum and weight decay
    over the parameters of `module` that require a gradient, as PyTorch's fused kernel (one
    pass over each tensor: on the CPU 2.3-3.4 times faster than the per-operation default,
    equal to it to float rounding)."""
    trained = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.SGD(
        trained, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        fused=True,
    )  # fmt: skip


def train_on_plateaus(
    module: nn.Module,
    config: HeadParams,
    device: torch.device,
    one_epoch: Callable[[torch.optim.Optimizer], None],
    measure: Callable[[], tuple[float, float, float, float]],
    on_epoch: Callable[[EpochLog], None] | None = None,
    lr_key: str = "head.lr",
) -> list[EpochLog]:
    """The training schedule shared by every trained layer: SGD (`config` lr, momentum,
    weight decay: `sgd`) over epochs of `one_epoch` (in train mode); after
    each, `measure` (in eval mode) gives ``(train loss, train accuracy, hold-out loss,
    hold-out accuracy)``. After `patience` epochs without hold-out improvement the learning
    rate is divided by 10, and after `lr_drops` divisions the next plateau stops training (or
    `max_epochs`). The module ends with the weights of its best hold-out epoch, in eval mode.
    Deterministic for a seed on the CPU; a diverging loss is a PipelineError naming `lr_key`.
    Returns the per-epoch log."""
    torch.manual_seed(config.seed)
    module.to(device)
    optimiser = sgd(module, config)
    best_loss, best_state, stale, drops = math.inf, None, 0, 0
    history = []
    for epoch in range(1, config.max_epochs + 1):
        module.train()
        one_epoch(optimiser)
        lr = optimiser.param_groups[0]["lr"]
        module.eval()
        train_loss, train_accuracy, val_loss, val_accuracy = measure()
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise PipelineError(
                f"{lr_key}: training diverged at epoch {epoch} (loss {train_loss}, hold-out "
                f"loss {val_loss}); lower it"
            )
        entry = EpochLog(epoch, lr, train_loss, train_accuracy, val_loss, val_accuracy)
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
        if val_loss < best_loss - 1e-6:
            best_loss, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            continue
        stale += 1
        if stale < config.patience:
            continue
        if drops == config.lr_drops:
            break
        drops, stale = drops + 1, 0
        for group in optimiser.param_groups:
            group["lr"] /= 10
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


@dataclass(frozen=True)
class FittedHead:
    """Adaptation layers trained on a hold-out schedule (by `fit_head` on descriptor rows, by
    `pipeline.trained.weak.fit_image_labels` on image labels): the module (eval mode), its per-epoch
    log, its shape (``dim``, ``layers``, ``hidden``), the mask of the rows held out and the
    seconds its epochs took (training and measuring, not what was prepared before them)."""

    module: nn.Module
    history: list[EpochLog]
    shape: dict[str, int]
    held_out: np.ndarray
    epoch_seconds: float

    @property
    def best(self) -> EpochLog:
        """The epoch of the lowest hold-out loss (whose weights the module has)."""
        return min(self.history, key=lambda e: e.val_loss)


def fit_head(
    features: DiskRows,
    labels: np.ndarray,
    image_ids: np.ndarray,
    n_classes: int,
    config: HeadParams,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> FittedHead:
    """Build the adaptation layers of `config` and train them on descriptors ``[N, d]`` (read
    from disk by mini-batch) with labels ``[N]`` in ``0..n_classes`` (0 = background), holding
    out whole images (a seeded `config.val_fraction` of `image_ids`)."""
    held_out = holdout_mask(image_ids, config.val_fraction, config.seed)
    y = torch.from_numpy(labels.astype(np.int64))
    shape = {"dim": features.dim, "layers": config.layers, "hidden": config.hidden}
    head = build_head(
        shape["dim"], n_classes + 1, layers=config.layers, hidden=config.hidden,
        dropout=config.dropout, seed=config.seed,
    )  # fmt: skip
    train = (features.subset(np.flatnonzero(~held_out)), y[~held_out])
    val = (features.subset(np.flatnonzero(held_out)), y[held_out])
    started = time.perf_counter()
    history = train_head(head, train, val, config, device, on_epoch)
    return FittedHead(head, history, shape, held_out, time.perf_counter() - started)
