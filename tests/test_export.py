"""Export: weights + policy reload with weights_only=True, standalone files match the model in memory."""

from __future__ import annotations

import pytest
import torch

from autoprune import Policy, prunable_layers, prune
from autoprune.errors import AutopruneInputError, ExportError, ModelLoadError
from autoprune.export import _check_parity, load_pruned, save_pruned
from autoprune.layers import output_layers
from autoprune.modelio import Inputs
from autoprune.runtimes.onnxruntime import onnx_available
from autoprune.zoo import MLP, ResNetCNN, example_input
from tests.conftest import in_ci, output_of


def _pruned(model, x):
    layers = [n for n in prunable_layers(model) if n not in output_layers(model, x)]
    policy = Policy.uniform(layers, sparsity=0.5, method="l1_structured")
    return policy, prune(model, policy, x)


def test_weights_reload_and_match_for_every_architecture(zoo_model, tmp_path):
    """A structurally pruned model reloads on a fresh base model with the same outputs (1e-4)."""
    _, model, x = zoo_model
    policy, pruned = _pruned(model, x)
    files = save_pruned(pruned, policy, tmp_path, example_inputs=x, base_model=model, formats=("torchscript",))
    state = torch.load(files["weights"], weights_only=True)
    assert isinstance(state, dict)
    reloaded = load_pruned(tmp_path, model)
    assert torch.allclose(output_of(reloaded, x), output_of(pruned, x), atol=1e-4)
    assert Policy.from_json(files["policy"]) == policy
    standalone = torch.jit.load(str(files["torchscript"]))  # the inputs' tensors, positional; the logits out
    assert torch.allclose(standalone(*Inputs.of(x).tensors), output_of(pruned, x), atol=1e-4)


@pytest.mark.skipif(not onnx_available() and not in_ci(),
                    reason="onnx and onnxruntime are not installed (pip install -e '.[onnx]')")
def test_onnx_file_runs_with_another_batch_size(tmp_path):
    """The ONNX file runs in onnxruntime on a batch size other than the export's and matches."""
    import onnxruntime

    model = MLP().eval()
    x = torch.randn(2, 16)
    policy, pruned = _pruned(model, x)
    files = save_pruned(pruned, policy, tmp_path, example_inputs=x, formats=("onnx",))
    session = onnxruntime.InferenceSession(str(files["onnx"]))
    x5 = torch.randn(5, 16)
    got = session.run(None, {session.get_inputs()[0].name: x5.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), pruned(x5), atol=1e-4)


@pytest.mark.skipif(not onnx_available() and not in_ci(),
                    reason="onnx and onnxruntime are not installed (pip install -e '.[onnx]')")
def test_large_outputs_export_despite_rounding(tmp_path):
    """Outputs in the tens of thousands differ in ONNX Runtime by float32 rounding alone (about 0.01 here, against
    an absolute 1e-4): parity is judged at the outputs' scale, so the export is written (it raised ExportError
    after a whole search on a fine-tuned EfficientNet-Lite0)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(300)
    x = torch.randn(4, 256)
    assert float(model(x).abs().max()) > 1e4
    files = save_pruned(model, Policy(), tmp_path, example_inputs=x, formats=("onnx",))
    assert files["onnx"].exists()


def test_an_output_off_beyond_its_scale_is_refused():
    """The scaled tolerance still refuses a file whose outputs are wrong: 1 off on outputs of about 1e4 is 1e-4
    of their scale, 1.5 is beyond it."""
    expected = torch.tensor([[1.0e4, -3.0, 0.5]])
    _check_parity("ONNX", expected, expected + torch.tensor([[1.0, 0.0, 0.0]]), 1e-4)
    with pytest.raises(ExportError, match="ONNX export differs from the model in memory by 1.5"):
        _check_parity("ONNX", expected, expected + torch.tensor([[0.0, 1.5, 0.0]]), 1e-4)


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    """Loading weights onto the wrong base model raises ModelLoadError, not a raw RuntimeError."""
    model = MLP()
    x = torch.randn(2, 16)
    policy, pruned = _pruned(model, x)
    save_pruned(pruned, policy, tmp_path, example_inputs=x, formats=())
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_pruned(tmp_path, MLP(num_classes=3))


def test_unknown_format_is_rejected(tmp_path):
    """Only torchscript and onnx are known formats; another is bad input (exit 2 from the CLI)."""
    with pytest.raises(AutopruneInputError, match="tflite"):
        save_pruned(MLP(), Policy(), tmp_path, example_inputs=torch.randn(1, 16), formats=("tflite",))


def test_a_model_with_dropped_blocks_reloads_from_its_policy(tmp_path):
    """load_pruned drops the blocks policy.json names before loading the weights (save_pruned checks the
    reload matches); a base model without those blocks is a clear error."""
    torch.manual_seed(0)
    model = ResNetCNN(widths=(8, 16), blocks=2).eval()
    x = example_input(model)
    policy = Policy(drop=("layers.0", "layers.3"))
    pruned = prune(model, policy, x)
    save_pruned(pruned, policy, tmp_path, example_inputs=x, base_model=model, formats=("torchscript",))
    reloaded = load_pruned(tmp_path, model)
    assert isinstance(reloaded.layers[3], torch.nn.Identity)
    assert torch.allclose(reloaded(x), pruned(x), atol=1e-5)
    with pytest.raises(ModelLoadError, match="drops a block"):
        load_pruned(tmp_path, ResNetCNN(widths=(8, 16), blocks=1))
