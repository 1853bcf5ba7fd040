"""Build an onnxruntime-genai model folder with its model builder, run as `python -m benchmarks.genai_build`.

onnxruntime-genai 0.18's builder imports multimodal classes (Qwen3.5, ...) that transformers 4.57, which the
export stage pins, does not have. Those classes are only looked up for other architectures, so this shim
gives transformers empty placeholders under the missing names, fills in `rope_scaling` as transformers 5
would, and then runs the builder unchanged.
Arguments are the builder's own (`-i HF_DIR -o OUT -p fp32|int8|int4 -e cpu`).
"""

from __future__ import annotations

import runpy
import sys

PLACEHOLDERS = [  # what builders/base.py imports from transformers that 4.57 may lack
    "Gemma3ForConditionalGeneration",
    "Lfm2VlForConditionalGeneration",
    "Mistral3ForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
]


def main() -> None:
    import transformers

    # subtle: transformers is a lazy module whose namespace is rewritten as submodules load, so a plain
    # setattr does not stick; its class's __getattr__ falls back to a placeholder instead
    lazy = type(transformers)
    real_getattr = lazy.__getattr__

    def getattr_or_placeholder(module, name):
        try:
            return real_getattr(module, name)
        except (AttributeError, ImportError):
            if module.__name__ == "transformers" and name in PLACEHOLDERS:
                return type(name, (), {})
            raise

    lazy.__getattr__ = getattr_or_placeholder

    # the builder reads RoPE settings from `rope_scaling` as transformers 5 writes it (a dict with rope_type);
    # 4.57 leaves it None for plain RoPE, which the builder cannot iterate
    real_from_pretrained = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        config = real_from_pretrained(cls, *args, **kwargs)
        if getattr(config, "rope_scaling", 0) is None:
            config.rope_scaling = {"rope_type": "default"}
        return config

    transformers.AutoConfig.from_pretrained = classmethod(from_pretrained)
    sys.argv = ["builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
