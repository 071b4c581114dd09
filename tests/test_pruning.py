"""Pruning (harness.detectors.pruning): magnitude zeroes weights and keeps shapes through the fine-tune; structured
removes hidden units and rebuilds smaller layers; a learned detector prunes every trained model when its backend
entry asks, and the pruned model runs on a real runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.backends import prepare
from harness.backends import as_spec
from harness.detectors.pruning import PruningSpec
from harness.detectors.autoencoder import DenseAutoencoder
from harness.detectors.lstm import LSTMForecaster
from harness.detectors.pruning import count_weights, prune_and_finetune
from harness.detectors.torch_models import DenseAE, LinearLSTM
from harness.scoring.nab import probation_rows

from test_learned import series, wave


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def nudge(model: nn.Module) -> None:
    """A fine-tune stand-in that moves every weight: pruned ones must stay zero regardless."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)


def test_magnitude_zeroes_the_smallest_weights_of_every_layer_and_keeps_them_zero() -> None:
    torch.manual_seed(0)
    model = DenseAE(16, 32, 4, False, depth=1)
    shapes = [layer.weight.shape for layer in linears(model)]
    smallest = [layer.weight.detach().abs().flatten().sort().values for layer in linears(model)]
    info = prune_and_finetune(model, "magnitude", 0.6, nudge)
    assert [layer.weight.shape for layer in linears(model)] == shapes
    for layer, ranked in zip(linears(model), smallest):
        w = layer.weight.detach()
        zeros = int((w == 0).sum())
        assert zeros == round(0.6 * w.numel())  # exactly the share asked for, after the fine-tune moved the rest
        kept_min = (w[w != 0] - 0.01).abs().min()
        assert kept_min >= ranked[zeros - 1] - 1e-6  # the zeroed ones were the smallest
        assert not hasattr(layer, "weight_orig")  # the masks are made permanent
    assert info["weights"] == info["weights_before"] == count_weights(model)[0]
    assert info["weights_nonzero"] == count_weights(model)[1] < info["weights"]


def test_structured_removes_hidden_units_and_keeps_the_model_s_interface() -> None:
    torch.manual_seed(1)
    model = DenseAE(16, 32, 4, False, depth=1)
    x = torch.randn(5, 16)
    calls = []
    info = prune_and_finetune(model, "structured", 0.75, calls.append)
    assert calls == [model]
    widths = [(layer.in_features, layer.out_features) for layer in linears(model)]
    assert widths == [(16, 8), (8, 8), (8, 4), (4, 8), (8, 8), (8, 16)]  # hidden 32 -> 8; window and code kept
    assert model(x).shape == (5, 16)
    assert info["weights"] == count_weights(model)[0] < info["weights_before"]
    with pytest.raises(ValueError, match="no hidden layer to shrink in LinearLSTM"):
        prune_and_finetune(LinearLSTM(8, 8), "structured", 0.5, nudge)


def test_structured_keeps_the_strongest_units() -> None:
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.0], [3.0, 0.0], [0.0, 0.2], [0.0, 2.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    prune_and_finetune(model, "structured", 0.5, lambda m: None)
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), [[3.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(model[2].weight.detach().numpy(), [[2.0, 4.0]])


def test_a_backend_entry_prunes_with_prune_and_sparsity_together() -> None:
    runtime, pruning = PruningSpec.split({"backend": "onnxruntime", "prune": "magnitude", "sparsity": 0.5})
    assert runtime == {"backend": "onnxruntime"} and pruning == PruningSpec(prune="magnitude", sparsity=0.5)
    assert f"{as_spec(runtime).token}.{pruning.token}" == "onnxruntime-fp32.prune-magnitude.sparsity-0.5"
    assert PruningSpec.split({"backend": "torch"}) == ({"backend": "torch"}, None)
    for bad in ({"prune": "magnitude"}, {"sparsity": 0.5}, {"prune_epochs": 3}):
        with pytest.raises(ValueError, match="go together"):
            PruningSpec.split(dict(backend="torch", **bad))


@pytest.mark.parametrize("method", ["magnitude", "structured"])
def test_a_detector_prunes_each_model_before_the_runtime_gets_it(method: str, tmp_path) -> None:
    s = series(wave(600, seed=4))
    P = probation_rows(600)
    params = {"window": 8, "hidden": 16, "bottleneck": 3, "epochs": 2, "min_history": 20, "suppress": 30}
    det = DenseAutoencoder(**params)
    det.use_backend({"backend": "onnxruntime"}, cache_dir=str(tmp_path))
    det.use_pruning({"prune": method, "sparsity": 0.5, "prune_epochs": 1})
    scores = det.score_file(s, P)
    assert scores.shape == (600,) and np.isfinite(scores).all() and scores[P:].max() > 0
    info = det.backend_summary()
    assert info["pruning"]["method"] == method and info["pruning"]["weights_nonzero"] < info["pruning"]["weights_before"]
    assert info["check_max_abs_err"] <= 1e-5  # the runtime reproduces the pruned torch model
    assert count_weights(det.last_model)[1] == info["pruning"]["weights_nonzero"]
    np.testing.assert_allclose(prepare({"backend": "torch"}, det.last_model, det.last_calibration).infer(det.last_calibration[:4]),
                               det.last_compiled.infer(det.last_calibration[:4]), atol=1e-5)
    unpruned = DenseAutoencoder(**params)
    unpruned.use_backend({"backend": "onnxruntime"}, cache_dir=str(tmp_path))
    assert not np.array_equal(unpruned.score_file(s, P), scores)
    lstm = LSTMForecaster(window=8, hidden=8, epochs=1)
    lstm.use_pruning({"prune": "magnitude", "sparsity": 0.5})
    assert np.isfinite(lstm.score_file(s, P)).all() and lstm.last_pruning["zero_share"] > 0.4


OLD_RUNTIME = {"threads": 1, "quantization": None, "graph_optimization": "all", "quantize_input_layers": False,
               "calibration_headroom": 2.0, "verify": True}  # how a cell's backend was stored before issue 22


def test_a_cell_stored_with_pruning_in_its_backend_reads_the_same() -> None:
    """Run folders written before pruning was the detector's (every runtime's settings in the backend, pruning
    too) stay readable: history, compare and resume read them as the same cells."""
    from pydantic import ValidationError

    from harness.scenario import Cell

    def old(backend: dict) -> Cell:
        return Cell.model_validate({"id": "c", "detector": "ae", "type": "autoencoder", "params": {}, "axes": {},
                                    "backend": {**OLD_RUNTIME, **backend}})

    pruned = old({"backend": "onnxruntime", "precision": "fp32", "prune": "structured", "sparsity": 0.5, "prune_epochs": 2})
    assert type(pruned.backend).__name__ == "OnnxRuntimeSpec" and pruned.pruning == PruningSpec(prune="structured", sparsity=0.5)
    assert pruned.build == "onnxruntime-fp32.prune-structured.sparsity-0.5"
    plain = old({"backend": "torch", "precision": "fp32", "prune": None, "sparsity": 0.0, "prune_epochs": 2})
    assert type(plain.backend).__name__ == "TorchSpec" and plain.pruning is None and plain.build == "torch-fp32"
    with pytest.raises(ValidationError, match="graph_optimization applies to onnxruntime only"):
        as_spec({"backend": "openvino", "graph_optimization": "basic"})  # not its default: still refused
