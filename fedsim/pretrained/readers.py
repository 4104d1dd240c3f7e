"""Reading named tensors from checkpoint files: safetensors, PyTorch state dicts, ONNX.

``READERS`` maps a format name to a reader ``path -> {name: tensor}``; :func:`read_tensors`
picks the format from the file's suffix unless one is given. Nothing is imported from the
libraries that wrote the files (timm, transformers, torchvision): only tensors are read.

ONNX exports keep the names of most initializers but give the weights of ``MatMul`` nodes
anonymous names (``onnx::MatMul_1966``) and store them transposed. :func:`read_onnx`
recovers such a weight's name from the bias added to the product (``....query.bias`` ->
``....query.weight``) and transposes it back to PyTorch's ``[out, in]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedsim.errors import UserError
from fedsim.registry import Registry

Tensors = dict[str, torch.Tensor]
Reader = Callable[[Path], Tensors]

READERS: Registry[Reader] = Registry("checkpoint format")

#: File suffixes and the format they mean.
SUFFIXES = {
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".ckpt": "torch",
    ".onnx": "onnx",
}


@READERS.register("safetensors", summary="a .safetensors file (Hugging Face, timm)")
def read_safetensors(path: Path) -> Tensors:
    """Every tensor of a safetensors file."""
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


@READERS.register("torch", summary="a PyTorch state dict saved with torch.save (.pt, .pth, .bin)")
def read_torch(path: Path) -> Tensors:
    """A state dict saved with ``torch.save``; ``state_dict``/``model`` wrappers are unwrapped."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


@READERS.register("onnx", summary="the initializers of an ONNX graph (MatMul weights renamed)")
def read_onnx(path: Path) -> Tensors:
    """The initializers of an ONNX model, anonymous MatMul weights named after their bias."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: Tensors = {}
    for name, array in arrays.items():
        if name.startswith("onnx::MatMul") and array.ndim == 2:
            name, array = _named_matmul(name, array, consumers, arrays)
        out[name] = torch.from_numpy(np.array(array))
    return out


def _named_matmul(
    name: str, array: np.ndarray, consumers: dict[str, list], arrays: dict[str, np.ndarray]
) -> tuple[str, np.ndarray]:
    """``(weight name, [out, in] array)`` from the bias added to the MatMul's product."""
    for node in consumers.get(name, []):
        if node.op_type != "MatMul":
            continue
        for add in consumers.get(node.output[0], []):
            if add.op_type != "Add":
                continue
            bias = next((i for i in add.input if i.endswith(".bias") and i in arrays), None)
            if bias is not None:
                return bias[: -len("bias")] + "weight", array.T
    return name, array


def format_of(path: Path, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` when given, else inferred from the suffix."""
    if fmt is not None:
        READERS.entry(fmt)
        return fmt
    try:
        return SUFFIXES[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(SUFFIXES))
        raise UserError(
            f"cannot tell the format of {path.name!r} from its suffix (expected one of {known}); "
            f"set model.format to one of: {', '.join(READERS.names())}"
        ) from None


def read_tensors(path: Path, fmt: str | None = None) -> Tensors:
    """The named tensors of ``path`` in format ``fmt`` (inferred from the suffix when None)."""
    if not path.is_file():
        raise UserError(f"pretrained weights {str(path)!r} not found")
    fmt = format_of(path, fmt)
    try:
        return READERS.get(fmt)(path)
    except UserError:
        raise
    except Exception as exc:  # every library raises its own kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {str(path)!r} as {fmt}: {first}") from None
