"""Out-of-memory errors name the frame count and resolution and say what to lower; compiling keeps names."""
import pytest
import torch

from selfi_ros.model import VGGTConfig
from selfi_ros.model.errors import LOWER_MEMORY_HINT, ModelOutOfMemoryError
from selfi_ros.model.loading import build_model
from selfi_ros.model.scene_memory import query_pass, run_anchor_pass


def _raise_oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(VGGTConfig.tiny(sail_reloc=True)).eval()


def test_forward_oom_names_frames_resolution_and_remedy(model, monkeypatch):
    monkeypatch.setattr(model.aggregator, "forward", _raise_oom)
    with pytest.raises(ModelOutOfMemoryError) as ei:
        model(torch.rand(3, 3, 28, 42))
    e = ei.value
    assert (e.frames, e.height, e.width) == (3, 28, 42)
    assert "3 frame(s) at 28x42 px" in str(e) and LOWER_MEMORY_HINT in str(e)
    assert isinstance(e.__cause__, torch.cuda.OutOfMemoryError)


def test_anchor_and_query_pass_oom_are_reported_per_call(model, monkeypatch):
    images = torch.rand(2, 3, 28, 28)
    memory, _ = run_anchor_pass(model, images)  # works before the failure is injected
    monkeypatch.setattr(model.aggregator.patch_embed, "forward", _raise_oom)
    with pytest.raises(ModelOutOfMemoryError, match="anchor window of 2 frame"):
        run_anchor_pass(model, images)
    with pytest.raises(ModelOutOfMemoryError, match=r"localizing 3 frame\(s\) at 28x28"):
        query_pass(model, memory, torch.rand(5, 3, 28, 28), batch_size=3)


def test_other_errors_pass_through_unchanged(model, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("not a memory problem")

    monkeypatch.setattr(model.aggregator, "forward", boom)
    with pytest.raises(RuntimeError, match="not a memory problem") as ei:
        model(torch.rand(1, 3, 28, 28))
    assert not isinstance(ei.value, ModelOutOfMemoryError)


def test_compile_for_inference_keeps_checkpoint_names():
    m = build_model(VGGTConfig.tiny())
    before = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    m.compile_for_inference()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == before
