"""Publishing a run: the model card, the Hub upload, the llama.cpp control-vector export and the
merged model.

Example:
    >>> from reptune.publish import write_model_card, push_run, export_control_vector
    >>> write_model_card("runs/honesty", repo_id="me/llama-honesty")
    >>> push_run("runs/honesty", "me/llama-honesty", dry_run=True)
    >>> export_control_vector(SteeringVectors.load("runs/honesty/vectors"), "honesty.gguf")
"""

from ..workflow.layout import RunFolder, load_run
from .card import build_model_card, default_template_path, write_model_card
from .gguf_export import export_control_vector, load_control_vector
from .hub import files_to_upload, publish_run, push_run
from .merged import export_merged

__all__ = [
    "RunFolder",
    "build_model_card",
    "default_template_path",
    "export_control_vector",
    "export_merged",
    "files_to_upload",
    "load_control_vector",
    "load_run",
    "publish_run",
    "push_run",
    "write_model_card",
]
