"""Pruning a trained model, then a short fine-tune: magnitude (unstructured) and structured (hidden units).

Plain torch (`torch.nn.utils.prune` for the masks); the learned detector calls `prune_and_finetune` after training,
when told to (`PruningSpec`: a scenario's backend entry with `prune`, `sparsity`, `prune_epochs`).

- magnitude: in every Linear layer, the `sparsity` share of weights smallest in |w| is set to zero (L1
  unstructured); the fine-tune keeps them zero (the masks stay on while training), then the zeros are made
  permanent. The tensors keep their shapes: a dense runtime does the same arithmetic on the zeros, so this buys
  no speed (docs/quantization.md measures it); it shows what accuracy a sparse kernel could keep.
- structured: the hidden units of every chain Linear -> elementwise activation -> Linear inside an
  `nn.Sequential` (the autoencoder's hidden layers) are ranked by the L2 norm of their incoming weights, and the
  weakest `sparsity` share is removed: the layers are rebuilt smaller, so every runtime does less arithmetic.
  The code width and the window are kept. A model with no such chain (the LSTM) cannot be pruned so: an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from torch import nn

METHODS = ("magnitude", "structured")
KEYS = ("prune", "sparsity", "prune_epochs")  # a backend entry's keys that say how to prune, in its YAML


class PruningSpec(BaseModel):
    """How a learned detector prunes each model right after training, then fine-tunes it: written in a scenario's
    backend entry (`prune`, `sparsity`, `prune_epochs`), since it is what the build of that entry runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prune: Literal["magnitude", "structured"] = Field(
        description="magnitude (zeroed weights, shapes kept) or structured (hidden units removed)")
    sparsity: float = Field(gt=0.0, lt=1.0, description="the share of weights (magnitude) or hidden units (structured) removed")
    prune_epochs: int = Field(2, ge=0, le=100, description="fine-tuning passes over the probationary data after pruning")

    @property
    def token(self) -> str:
        """The cell-id part: `prune-structured.sparsity-0.5`, then `.prune-epochs-N` when not the default."""
        parts = [f"prune-{self.prune}", f"sparsity-{self.sparsity}"]
        if self.prune_epochs != 2:
            parts.append(f"prune-epochs-{self.prune_epochs}")
        return ".".join(parts)

    @classmethod
    def split(cls, entry: dict[str, Any]) -> tuple[dict[str, Any], "PruningSpec | None"]:
        """A backend entry's runtime settings, and its pruning (None when it asks for none)."""
        asked = {k: entry[k] for k in KEYS if k in entry}
        rest = {k: v for k, v in entry.items() if k not in KEYS}
        if not asked or (asked.get("prune") is None and not asked.get("sparsity") and asked.get("prune_epochs", 2) == 2):
            return rest, None
        if asked.get("prune") is None or not asked.get("sparsity"):
            raise ValueError("prune (magnitude or structured) and a sparsity above 0 go together (prune_epochs with them)")
        return rest, cls.model_validate(asked)


def prune_and_finetune(model: nn.Module, method: str, sparsity: float, finetune: Callable[[nn.Module], None]) -> dict[str, Any]:
    """Prune `model` in place, call `finetune(model)`, and return what was done (for the cell's backend info)."""
    from torch import nn
    from torch.nn.utils import prune

    before = count_weights(model)
    if method == "magnitude":
        layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=sparsity)
        finetune(model)
        for layer in layers:
            prune.remove(layer, "weight")
    elif method == "structured":
        removed = shrink_hidden_units(model, sparsity)
        if not removed:
            raise ValueError(f"structured pruning found no hidden layer to shrink in {type(model).__name__} "
                             "(it prunes Linear -> activation -> Linear chains: the autoencoder's hidden layers)")
        finetune(model)
    else:
        raise ValueError(f"unknown pruning method {method!r} (expected one of {', '.join(METHODS)})")
    after = count_weights(model)
    return {"method": method, "sparsity": sparsity, "weights_before": before[0], "weights": after[0],
            "weights_nonzero": after[1], "zero_share": round(1 - after[1] / max(after[0], 1), 4)}


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(weights, non-zero weights) over every parameter, masks applied."""
    import torch

    total = nonzero = 0
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            value = getattr(module, pname.removesuffix("_orig")) if pname.endswith("_orig") else p
            total += value.numel()
            nonzero += int(torch.count_nonzero(value))
    return total, nonzero


def shrink_hidden_units(model: nn.Module, sparsity: float) -> int:
    """Remove the weakest `sparsity` share of hidden units of every Linear -> elementwise -> Linear chain inside an
    nn.Sequential of `model`; returns how many units were removed."""
    import torch
    from torch import nn

    elementwise = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.Identity)
    removed = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        at = [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]
        for a, b in zip(at, at[1:]):
            if not all(isinstance(seq[k], elementwise) for k in range(a + 1, b)):
                continue
            first, second = seq[a], seq[b]
            keep = max(1, round(first.out_features * (1.0 - sparsity)))
            if keep >= first.out_features:
                continue
            with torch.no_grad():
                strength = first.weight.norm(dim=1) if first.bias is None else torch.hypot(first.weight.norm(dim=1), first.bias)
                units = torch.sort(torch.argsort(strength, descending=True)[:keep]).values
                narrow = nn.Linear(first.in_features, keep, bias=first.bias is not None)
                narrow.weight.copy_(first.weight[units])
                if first.bias is not None:
                    narrow.bias.copy_(first.bias[units])
                reader = nn.Linear(keep, second.out_features, bias=second.bias is not None)
                reader.weight.copy_(second.weight[:, units])
                if second.bias is not None:
                    reader.bias.copy_(second.bias)
            removed += first.out_features - keep
            seq[a], seq[b] = narrow, reader
    return removed
