"""The model, how it is fine-tuned, and where a run lives: the arguments every recipe and
``reptune tune`` share, parsed with trl's ``TrlParser`` (``--config run.yaml`` plus overrides).

:meth:`ModelArguments.peft_config` is the one place where reptune builds a LoRA config.

Example:
    >>> margs = ModelArguments(model="embedded:smollm2-135m", lora_r=16)
    >>> model, tok = margs.load()
    >>> trainer = RepTuneTrainer(model, args, peft_config=margs.peft_config(args), ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import DEFAULT_MODEL, load_model

__all__ = [
    "FINETUNE_MODES",
    "ModelLoadArguments",
    "TunedModelArguments",
    "ModelArguments",
    "RunArguments",
]

FINETUNE_MODES = ("lora", "layers", "full")


@dataclass
class ModelLoadArguments:
    """The model and how to load it: the options every command and recipe shares.

    Example:
        >>> ModelLoadArguments(model="embedded:smollm2-135m", dtype="bfloat16")
    """

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Model spec: embedded:<name>, a .gguf file, a local folder or a Hub id."},
    )
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype: float32, bfloat16, float16 or auto."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the model's repository."}
    )


@dataclass
class TunedModelArguments(ModelLoadArguments):
    """The model, how to load it, and a PEFT adapter (a tuned model) loaded onto it.

    Example:
        >>> TunedModelArguments(model="embedded:smollm2-135m", adapter="runs/honesty/adapter")
    """

    adapter: str | None = field(
        default=None, metadata={"help": "PEFT adapter folder (a tuned model) loaded onto --model."}
    )


@dataclass
class ModelArguments(ModelLoadArguments):
    """The model, how to load it and how to fine-tune it.

    Example:
        >>> ModelArguments(finetune="layers")  # full fine-tuning of RepTuneConfig.train_layers
    """

    finetune: str = field(
        default="lora",
        metadata={
            "help": "'lora' (adapters), 'layers' (full fine-tuning of train_layers, the "
            "published setting) or 'full' (every weight).",
            "choices": list(FINETUNE_MODES),
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names LoRA wraps, or 'all-linear'."},
    )
    lora_layers: list[int] | None = field(
        default=None, metadata={"help": "Put adapters only on these decoder blocks."}
    )
    lora_up_to_rep_layers: bool = field(
        default=True,
        metadata={
            "help": "Without lora_layers: adapters only on blocks up to the deepest rep layer. "
            "Later blocks cannot move the target activations, and left trainable they can "
            "learn to undo the shift."
        },
    )

    def __post_init__(self):
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, not {self.finetune!r}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [m for m in self.lora_target_modules.split(",") if m]
        if self.finetune == "lora" and not self.lora_target_modules:
            raise ValueError("lora_target_modules is empty: name modules or use 'all-linear'")

    def load(self):
        """``(model, tokenizer)``, the model in eval mode, whole also under a ZeRO-3 launch (the
        stages run it outside the Trainer)."""
        from ..training.launch import whole_model_loading

        with whole_model_loading():
            return load_model(
                self.model, dtype=self.dtype, trust_remote_code=self.trust_remote_code
            )

    def peft_config(self, train_args=None):
        """The LoRA config for ``train_args`` (a RepTuneConfig), or None when not LoRA.

        Also checks that the fine-tuning mode and ``train_layers`` agree.

        Example:
            >>> ModelArguments().peft_config(RepTuneConfig(output_dir="o", rep_layers=[3]))
        """
        train_layers = getattr(train_args, "train_layers", None)
        if self.finetune == "layers" and train_layers is None:
            raise ValueError("finetune='layers' needs train_layers (published: 11 12 ... 17)")
        if self.finetune == "full" and train_layers is not None:
            raise ValueError("finetune='full' trains every weight; drop train_layers")
        if self.finetune != "lora":
            return None
        if train_layers is not None:
            raise ValueError("train_layers is for finetune='layers'; use lora_layers with LoRA")
        from peft import LoraConfig

        layers = self.lora_layers
        rep_layers = list(getattr(train_args, "rep_layers", None) or [])
        retain_layers = list(getattr(train_args, "retain_layers", None) or [])
        if layers is None and self.lora_up_to_rep_layers and rep_layers:
            layers = list(range(max(rep_layers + retain_layers) + 1))
        targets = self.lora_target_modules
        if targets == ["all-linear"] and layers is not None:
            raise ValueError(
                "lora_target_modules='all-linear' cannot be limited to some layers (peft refuses "
                "it): name the modules (e.g. q_proj k_proj v_proj o_proj) or set "
                "lora_up_to_rep_layers false"
            )
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            # peft refuses layers_to_transform with the string form 'all-linear'
            target_modules="all-linear" if targets == ["all-linear"] else list(targets),
            layers_to_transform=layers,
            task_type="CAUSAL_LM",
        )


@dataclass
class RunArguments:
    """Where a recipe's run lives and whether it is published.

    Example:
        >>> RunArguments(run_dir="runs/honesty", push_to_hub_repo="me/llama-honesty")
    """

    run_dir: str = field(default="runs/reptune", metadata={"help": "Folder for every output."})
    push_to_hub_repo: str | None = field(
        default=None, metadata={"help": "Hub repo id to push the run to (token from env/login)."}
    )
    push_private: bool = field(default=False, metadata={"help": "Create the Hub repo private."})
