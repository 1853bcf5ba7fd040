"""Read a checkpoint's weights one tensor at a time, as float32 arrays under their transformers names.

`SafetensorsWeights` parses the safetensors headers of a model folder and reads each tensor with one positioned
read, in its stored dtype (bf16, fp16, fp32), converting only that tensor: nothing is memory-mapped, so the
pages read leave the process with the array (a mapped file would count every page it touched in the export's
resident memory). `GGUFWeights` does the same for a GGUF file: llama.cpp's tensor names are mapped to
transformers' and each tensor is dequantized and post-processed exactly as transformers' GGUF loader does
(`get_gguf_hf_weights_map`, `TENSOR_PROCESSORS`). `StateDictWeights` wraps an already loaded PyTorch model
(checkpoints without safetensors). `weights_for` picks one for a source. This file builds no graph.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError

_SAFETENSORS_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class Weights:
    """Name -> float32 array, read on demand. `stored_bytes`: the tensors' size as stored."""

    stored_bytes: int = 0

    def names(self) -> list[str]:
        raise NotImplementedError

    def get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        return name in set(self.names())

    def parameter_count(self) -> int:
        raise NotImplementedError

    def get_torch(self, name: str, dtype: Any) -> Any:
        """The tensor as a torch tensor of `dtype` (a PyTorch reference model's parameter)."""
        import torch

        return torch.from_numpy(self.get(name)).to(dtype)


class SafetensorsWeights(Weights):
    """The *.safetensors files of a folder (one file, or shards named by model.safetensors.index.json)."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise ExportError(f"{folder} has no .safetensors weights")
        self._where: dict[
            str, tuple[Path, int, str, tuple[int, ...], int]
        ] = {}  # name -> file, offset, dtype, shape, bytes
        for file in files:
            path = folder / file
            with open(path, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                start, end = info["data_offsets"]
                self._where[name] = (path, 8 + size + start, info["dtype"], tuple(info["shape"]), end - start)
        self.stored_bytes = sum(entry[4] for entry in self._where.values())

    def names(self) -> list[str]:
        return list(self._where)

    def has(self, name: str) -> bool:
        return name in self._where

    def parameter_count(self) -> int:
        return sum(int(np.prod(entry[3], dtype=np.int64)) for entry in self._where.values())

    def get_torch(self, name: str, dtype: Any) -> Any:
        import torch

        if self._where[name][2] == "BF16" and dtype == torch.bfloat16:  # as stored: no float32 copy on the way
            return torch.from_numpy(self._read(name)[0].view(np.int16)).view(torch.bfloat16)
        return super().get_torch(name, dtype)

    def _read(self, name: str) -> tuple[np.ndarray, str]:
        """The tensor's stored values (bf16 as uint16) and its safetensors dtype, with one positioned read."""
        path, offset, dtype, shape, length = self._where[name]
        if dtype not in _SAFETENSORS_DTYPES:
            raise ExportError(f"tensor {name} is stored as {dtype}, which the export cannot read")
        raw = np.empty(length, np.uint8)
        with open(path, "rb", buffering=0) as f:
            f.seek(offset)
            if f.readinto(memoryview(raw)) != length:
                raise ExportError(f"{path} is truncated (tensor {name}); download the checkpoint again")
        return raw.view(_SAFETENSORS_DTYPES[dtype]).reshape(shape), dtype

    def get(self, name: str) -> np.ndarray:
        array, dtype = self._read(name)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            wide = array.astype(np.uint32)
            del array
            wide <<= 16  # in place: the largest tensor costs its fp32 size plus its stored size, once
            return wide.view(np.float32)
        return array.astype(np.float32, copy=False)


class GGUFWeights(Weights):
    """The tensors of a GGUF file under transformers' names, dequantized as transformers' loader does."""

    def __init__(self, path: Path, config: Any):
        import gguf
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, load_gguf_checkpoint

        self.path = Path(path)
        reader = gguf.GGUFReader(str(self.path))
        architecture = reader.fields["general.architecture"].contents()
        parsed = load_gguf_checkpoint(str(self.path), return_tensors=False)
        self._processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed.get("config", {}))
        self._mapping, self._parsed = _gguf_name_map(config), parsed
        # subtle: transformers processes a tensor under its llama.cpp name, then renames it (load_gguf_checkpoint)
        self._tensors = {self._mapping[t.name]: t for t in reader.tensors if t.name in self._mapping}
        self.stored_bytes = sum(int(t.n_bytes) for t in self._tensors.values())

    def names(self) -> list[str]:
        return list(self._tensors)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def parameter_count(self) -> int:
        return sum(int(t.n_elements) for t in self._tensors.values())

    def get(self, name: str) -> np.ndarray:
        import gguf

        tensor = self._tensors[name]
        raw = np.fromfile(self.path, dtype=tensor.data.dtype, count=tensor.data.size, offset=int(tensor.data_offset))
        values = gguf.quants.dequantize(raw.reshape(tensor.data.shape), tensor.tensor_type)
        processed = self._processor.process(
            weights=values, name=tensor.name, tensor_key_mapping=self._mapping, parsed_parameters=self._parsed
        )
        return np.ascontiguousarray(processed.weights, np.float32)


class StateDictWeights(Weights):
    """The parameters of a loaded PyTorch model (its state dict, tied weights included)."""

    def __init__(self, model: Any):
        self._state = model.state_dict()
        self.stored_bytes = sum(t.numel() * t.element_size() for t in self._state.values())

    def names(self) -> list[str]:
        return list(self._state)

    def has(self, name: str) -> bool:
        return name in self._state

    def parameter_count(self) -> int:
        return sum(t.numel() for t in self._state.values())

    def get(self, name: str) -> np.ndarray:
        return self._state[name].detach().float().numpy()


def _gguf_name_map(config: Any) -> dict[str, str]:
    """llama.cpp tensor name -> transformers name, from a model built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return get_gguf_hf_weights_map(model)


def has_safetensors(folder: str | os.PathLike) -> bool:
    return any(Path(folder).glob("*.safetensors"))


def weights_for(source: Any, config: Any) -> Weights | None:
    """A reader for `source` (sources.Source): its GGUF file or its folder's safetensors; None if it has neither
    (e.g. pytorch_model.bin only: the model is then loaded by transformers)."""
    if source.gguf_file is not None:
        return GGUFWeights(Path(source.load_from) / source.gguf_file, config)
    folder = Path(source.load_from)
    if source.kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            folder = Path(
                snapshot_download(
                    source.load_from,
                    allow_patterns=["*.safetensors", "*.json"],
                    local_files_only=source.local_files_only,
                )
            )
        except Exception:  # noqa: BLE001  the loader reports the Hub's errors with its own hint
            return None
    return SafetensorsWeights(folder) if has_safetensors(folder) else None
