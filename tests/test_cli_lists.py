"""Every list option of every command takes a comma list, as many tools do."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from conftest import make_model, make_tokenizer

from reptune import cli
from reptune.commands import TEXT_LIST_OPTIONS, parse, split_comma_lists
from reptune.vectors import SteeringVectors


def _command_dataclasses(module_name: str) -> list[type]:
    module = importlib.import_module(f"reptune.commands.{module_name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value)
    ]
    # A shared option class a command's own class extends is parsed through that class.
    return [t for t in found if not any(o is not t and issubclass(o, t) for o in found)]


def _list_options(types):
    """(name, element type) of every option that takes several values, from the parser."""
    from trl import TrlParser

    for action in TrlParser(types)._actions:
        if action.nargs in ("+", "*") and action.option_strings:
            if action.dest not in TEXT_LIST_OPTIONS:
                yield action.dest, "int" if action.type is int else "other"


LIST_OPTIONS = sorted(
    {
        (command, name, kind)
        for command, module in cli.COMMANDS.items()
        for name, kind in _list_options(_command_dataclasses(module))
    }
)


def test_the_commands_have_list_options():
    names = {name for _, name, _ in LIST_OPTIONS}
    assert {"lora_target_modules", "layers", "coefficients", "data"} <= names


@pytest.mark.parametrize("command,option,kind", LIST_OPTIONS)
def test_a_comma_list_equals_the_space_list(command, option, kind):
    types = _command_dataclasses(cli.COMMANDS[command])
    values = ["3", "-1"] if kind == "int" else ["a", "b"]
    spaced = split_comma_lists(types, [f"--{option}", *values])
    assert split_comma_lists(types, [f"--{option}", ",".join(values)]) == spaced
    assert split_comma_lists(types, [f"--{option}={','.join(values)}"]) == spaced
    assert spaced == [f"--{option}", *values]


def test_free_text_lists_keep_their_commas():
    from reptune.commands.steer import SteerArguments

    (args,) = parse(
        (SteerArguments,),
        ["--vectors", "v", "--prompt", "Hello, you", "--layers", "-1,2", "--coefficients", "0,.5"],
        "reptune steer",
    )
    assert args.prompt == ["Hello, you"]
    assert args.layers == [-1, 2] and args.coefficients == [0.0, 0.5]


def test_a_comma_list_from_a_yaml_config_is_split(tmp_path):
    from reptune.workflow.args import ModelArguments

    (tmp_path / "run.yaml").write_text("lora_target_modules: q_proj,v_proj\n")
    (args,) = parse((ModelArguments,), ["--config", str(tmp_path / "run.yaml")], "reptune tune")
    assert args.lora_target_modules == ["q_proj", "v_proj"]


def test_tune_trains_with_comma_separated_lora_target_modules(tmp_path):
    model, tok = make_model("llama", n_layers=2, hidden=32), make_tokenizer(pad=True)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    meta = SteeringVectors.describe_model(model)
    import torch

    SteeringVectors({1: torch.ones(32)}, meta).with_residual_norms({1: 1.0}).save(tmp_path / "v")
    (tmp_path / "rows.jsonl").write_text('{"prompt": "Hi", "completion": "Hello there"}\n' * 2)
    argv = ["tune", "--model", str(tmp_path / "model"), "--vectors", str(tmp_path / "v")]
    argv += ["--data", str(tmp_path / "rows.jsonl"), "--output_dir", str(tmp_path / "out")]
    argv += ["--lora_target_modules", "q_proj,v_proj", "--max_steps", "1", "--report_to", "none"]
    argv += ["--rep_positions", "-1", "--per_device_train_batch_size", "2"]
    assert cli.main(argv) == 0
    import json

    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
