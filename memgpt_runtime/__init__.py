"""memgpt-runtime: fast CPU inference for Hugging Face language models on ONNX Runtime, without torch.

import memgpt_runtime as mr
lm = mr.load("exports/smollm2-int8")
print(lm.generate_text("What is the capital of France?", chat=True, max_new_tokens=32))
"""

from .config import GenerationConfig
from .errors import ExportError, MemgptError, ModelFolderError, PromptTooLongError, UsageError
from .manifest import Manifest, read_manifest
from .model import LanguageModel, load
from .request import Done, GenerateResult, Request, Step

__version__ = "0.1.0"

__all__ = [
    "ExportError",
    "Done",
    "GenerateResult",
    "GenerationConfig",
    "LanguageModel",
    "Manifest",
    "MemgptError",
    "ModelFolderError",
    "PromptTooLongError",
    "Request",
    "Step",
    "UsageError",
    "load",
    "read_manifest",
]
