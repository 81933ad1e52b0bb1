import pytest
import torch
from safetensors.torch import save_file

from inkfuse.artifacts import checkpoint
from inkfuse.errors import CheckpointError


def test_optimizer_state_round_trips(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    checkpoint.save_tensors(tmp_path / "t.safetensors", tensors)
    restored = checkpoint.optimizer_state(checkpoint.load_tensors(tmp_path / "t.safetensors"), rest)
    opt2 = torch.optim.AdamW(net.parameters())
    opt2.load_state_dict(restored)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])


def test_damaged_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.safetensors"
    checkpoint.save_tensors(good, {"w": torch.ones(100)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load_tensors(cut)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not written by inkfuse"):
        checkpoint.load_tensors(foreign)
    pickle = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, pickle)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load_tensors(pickle)
    with pytest.raises(CheckpointError, match="is missing"):
        checkpoint.load_tensors(tmp_path / "nope.safetensors")


def test_weights_of_another_model_get_one_line_naming_the_tensor(tmp_path):
    expected = torch.nn.Linear(3, 2).state_dict()
    path = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"run lacks tensor bias: .*different model than "
                                              r"its config; train it again"):
        checkpoint.check_weights({"weight": torch.ones(2, 3)}, expected, path, "its config",
                                 fix="train it again")
    with pytest.raises(CheckpointError, match="has an unexpected tensor extra"):
        checkpoint.check_weights({**expected, "extra": torch.ones(1)}, expected, path, "it")
    with pytest.raises(CheckpointError, match=r"weight is \[3, 3\] but it has \[2, 3\]"):
        checkpoint.check_weights({**expected, "weight": torch.ones(3, 3)}, expected, path, "it")
    checkpoint.check_weights(dict(expected), expected, path, "it")  # a fitting one passes
