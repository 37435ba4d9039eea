import pytest
import torch
from conftest import ARCHITECTURES, make_model
from peft import LoraConfig, get_peft_model

from reptune.layers import check_layers, find_layers, hidden_size, unwrap_model

LORA_TARGETS = {"gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "phi3": ["qkv_proj"]}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_find_layers_plain_and_peft(arch):
    model = make_model(arch, n_layers=3)
    layers = find_layers(model)
    assert len(layers) == 3
    peft_model = get_peft_model(
        model, LoraConfig(r=2, target_modules=LORA_TARGETS.get(arch, ["q_proj", "v_proj"]))
    )
    assert find_layers(peft_model) is layers
    assert unwrap_model(peft_model) is model
    assert hidden_size(peft_model) == 32


def test_find_layers_through_ddp_style_wrapper():
    model = make_model("llama")

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert find_layers(Wrapper(model)) is model.model.layers


def test_unknown_architecture_names_the_override():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ValueError, match="layer_path="):
        find_layers(Odd())
    assert len(find_layers(Odd(), layer_path="blocks")) == 1
    with pytest.raises(ValueError, match="does not name"):
        find_layers(Odd(), layer_path="nothing.here")


def test_check_layers_range_and_negative():
    assert check_layers([-1, 0, 2], 4) == [0, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        check_layers([4], 4)
    with pytest.raises(ValueError, match="no layers"):
        check_layers([], 4)
