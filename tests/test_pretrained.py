"""Pretrained weights: readers, key layouts, position tables, errors, the catalog, real files.

Synthetic checkpoints are written in each library's exact key names and shapes (from a
fedsim model with known weights, renamed the way the library names them); loading one into
a freshly initialised model must reproduce the source model's outputs exactly. The real
files of ``make pretrained`` are tested where installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from fedsim.errors import UserError
from fedsim.models import build_model
from fedsim.models.bert import BertConfig, BertEncoder
from fedsim.pretrained import (
    CATALOG,
    load_pretrained,
    read_tensors,
    requirements,
    resize_positions,
)

TINY_VIT = {"patch_size": 4, "dim": 32, "depth": 2, "heads": 2}
SHAPE = (3, 16, 16)


def tiny_vit(seed: int, layer_scale: bool = True, shape: tuple[int, int, int] = SHAPE):
    model = build_model("timm_vit", {**TINY_VIT, "layer_scale": layer_scale}, shape, 5, seed).eval()
    if layer_scale:  # not the init's 1e-5, so that a lost scale shows in the outputs
        with torch.no_grad():
            for block in model.features.blocks:
                block.ls1.gamma.uniform_(0.5, 1.5)
                block.ls2.gamma.uniform_(0.5, 1.5)
    return model


def features_of(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.features(x)


def hf_vit_keys(state: dict[str, torch.Tensor], dinov2: bool) -> dict[str, torch.Tensor]:
    """A timm-layout ViT state in Hugging Face's names (ViTModel or Dinov2Model)."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"{b}attn.qkv.{kind}"].chunk(3, dim=0)
            out.update(
                {
                    f"{h}attention.attention.{n}.{kind}": t
                    for n, t in zip(("query", "key", "value"), (q, k, v), strict=True)
                }
            )
            out[f"{h}attention.output.dense.{kind}"] = state[f"{b}attn.proj.{kind}"]
            if dinov2:
                out[f"{h}norm1.{kind}"] = state[f"{b}norm1.{kind}"]
                out[f"{h}norm2.{kind}"] = state[f"{b}norm2.{kind}"]
                out[f"{h}mlp.fc1.{kind}"] = state[f"{b}mlp.fc1.{kind}"]
                out[f"{h}mlp.fc2.{kind}"] = state[f"{b}mlp.fc2.{kind}"]
            else:
                out[f"{h}layernorm_before.{kind}"] = state[f"{b}norm1.{kind}"]
                out[f"{h}layernorm_after.{kind}"] = state[f"{b}norm2.{kind}"]
                out[f"{h}intermediate.dense.{kind}"] = state[f"{b}mlp.fc1.{kind}"]
                out[f"{h}output.dense.{kind}"] = state[f"{b}mlp.fc2.{kind}"]
        if dinov2:
            out[f"{h}layer_scale1.lambda1"] = state[f"{b}ls1.gamma"]
            out[f"{h}layer_scale2.lambda1"] = state[f"{b}ls2.gamma"]
    return out


def test_timm_layout_from_safetensors_with_head(tmp_path: Path) -> None:
    src = tiny_vit(1)
    state = {k: v.contiguous() for k, v in src.features.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.zeros(1000, 32), torch.zeros(1000)  # an ImageNet head
    save_file(state, tmp_path / "vit.safetensors")
    dst = tiny_vit(2)
    fitted = load_pretrained(dst.features, str(tmp_path / "vit.safetensors"))
    assert (fitted.layout, fitted.prefix, fitted.resized) == ("timm_vit", "", False)
    assert fitted.loaded == len(dst.features.state_dict())
    x = torch.randn(3, *SHAPE)
    assert torch.equal(features_of(dst, x), features_of(src, x))


@pytest.mark.parametrize(("dinov2", "prefix", "suffix"), [(True, "dinov2.", ".bin"), (False, "vit.", ".pth")])
def test_hugging_face_vit_layouts(tmp_path: Path, dinov2: bool, prefix: str, suffix: str) -> None:
    src = tiny_vit(1, layer_scale=dinov2)
    keys = hf_vit_keys(src.features.state_dict(), dinov2)
    extra = (
        {"embeddings.mask_token": torch.zeros(1, 32)}
        if dinov2
        else {"pooler.dense.weight": torch.zeros(32, 32)}
    )
    file = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {prefix + k: v for k, v in {**keys, **extra}.items()}}, file)
    dst = tiny_vit(2, layer_scale=dinov2)
    fitted = load_pretrained(dst.features, str(file))
    assert fitted.layout == ("hf_dinov2" if dinov2 else "hf_vit") and fitted.prefix == prefix
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(features_of(dst, x), features_of(src, x), rtol=0, atol=1e-6)


def test_position_table_interpolated_to_the_input_size(tmp_path: Path) -> None:
    src = tiny_vit(1)  # 16 px: a 4x4 grid
    torch.save(src.features.state_dict(), tmp_path / "vit.pt")
    dst = tiny_vit(2, shape=(3, 32, 24))  # an 8x6 grid
    fitted = load_pretrained(dst.features, str(tmp_path / "vit.pt"))
    assert fitted.resized
    table = dst.features.pos_embed.detach()
    assert table.shape == (1, 1 + 8 * 6, 32)
    assert torch.equal(table[:, 0], src.features.pos_embed[:, 0].detach())  # the class token's entry
    const = torch.full((1, 17, 4), 0.25)
    assert torch.allclose(resize_positions(const, (8, 6)), torch.full((1, 49, 4), 0.25))
    ramp = torch.arange(4.0).repeat(4).reshape(1, 16, 1)  # varies along the width only
    grown = resize_positions(torch.cat([torch.zeros(1, 1, 1), ramp], 1), (2, 8))[0, 1:, 0].reshape(2, 8)
    assert torch.equal(grown[0], grown[1]) and bool((grown[0].diff() >= 0).all())
    with pytest.raises(UserError, match="not a square grid"):
        resize_positions(torch.zeros(1, 1 + 12, 4), (2, 2))


def onnx_linear(tmp_path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """``y = x @ W + b`` as an exporter writes it: anonymous MatMul weight, named bias."""
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["xw"]),
        helper.make_node("Add", ["xw", "layer.0.query.bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [
            numpy_helper.from_array(weight, "onnx::MatMul_7"),
            numpy_helper.from_array(bias, "layer.0.query.bias"),
        ],
    )
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph), path)
    return path


def test_onnx_matmul_weights_get_their_bias_name_and_torch_orientation(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)  # [in, out] as ONNX MatMul stores it
    tensors = read_tensors(onnx_linear(tmp_path, w, np.ones(4, np.float32)))
    assert set(tensors) == {"layer.0.query.weight", "layer.0.query.bias"}
    assert torch.equal(tensors["layer.0.query.weight"], torch.from_numpy(w.T))


def test_efficientnet_layout_and_one_line_errors(tmp_path: Path) -> None:
    src = build_model("efficientnet_lite", {}, (3, 32, 32), 5, 1).eval()
    state = dict(src.features.state_dict())
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    torch.save(state, tmp_path / "ok.pth")
    dst = build_model("efficientnet_lite", {}, (3, 32, 32), 5, 2).eval()
    assert load_pretrained(dst.features, str(tmp_path / "ok.pth")).layout == "efficientnet_pytorch"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(features_of(dst, x), features_of(src, x))

    cases = {
        "missing": ({k: v for k, v in state.items() if k != "_bn1.bias"}, r"missing key _bn1\.bias$"),
        "unexpected": (
            {**state, "_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)},
            "unexpected key _blocks",
        ),
        "misshapen": (
            {**state, "_conv_head.weight": torch.zeros(1000, 320, 1, 1)},
            r"misshapen key _conv_head\.weight \(1000, 320, 1, 1\) in the file, "
            r"\(1280, 320, 1, 1\) in the model$",
        ),
    }
    for name, (bad, pattern) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pth")
        with pytest.raises(
            UserError, match=r"\(efficientnet_pytorch layout\) does not fit the model: " + pattern
        ):
            load_pretrained(dst.features, str(tmp_path / f"{name}.pth"))


def test_bert_layout_with_prefix_pooler_and_position_ids(tmp_path: Path) -> None:
    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_positions=20
    )
    src = BertEncoder(cfg, pooler=True).eval()
    state = {f"bert.{k}": v.contiguous() for k, v in src.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(20).unsqueeze(0)
    save_file(state, tmp_path / "model.safetensors")
    dst = BertEncoder(cfg).eval()
    fitted = load_pretrained(dst, str(tmp_path / "model.safetensors"))
    assert (fitted.layout, fitted.prefix) == ("hf_bert", "bert.")
    ids = torch.tensor([[2, 7, 9, 3, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        assert torch.equal(dst(ids, mask), src(ids, mask))


def test_unknown_layout_format_and_file(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "odd.pt")
    model = tiny_vit(0)
    with pytest.raises(UserError, match=r"its keys match any known layout \(first key 'encoder\.weight'\)"):
        load_pretrained(model.features, str(tmp_path / "odd.pt"))
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(UserError, match=r"cannot tell the format of 'w\.npz'.*set model\.format"):
        load_pretrained(model.features, str(tmp_path / "w.npz"))
    with pytest.raises(UserError, match="not found"):
        load_pretrained(model.features, str(tmp_path / "none.safetensors"))
    with pytest.raises(UserError, match="unknown checkpoint layout 'keras'"):
        load_pretrained(model.features, str(tmp_path / "odd.pt"), layout="keras")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match=r"cannot read .*bad\.safetensors' as safetensors"):
        load_pretrained(model.features, str(tmp_path / "bad.safetensors"))


def test_catalog_pins_are_what_make_pretrained_installs() -> None:
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    line = next(ln for ln in makefile.splitlines() if ln.startswith("PRETRAINED :="))
    assert sorted(line.split(":=")[1].split()) == sorted(requirements())
    assert all("==" in r for r in requirements())


def write_scenario(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: pre\nrounds: 1\n"
        "data: {dataset: shapes, options: {image_size: 16, num_train: 200, num_test: 100}}\n"
        f"model: {model}\nclients: {{num: 2}}\noutput: {{dir: runs}}\n"
    )
    return path


def test_scenario_error_is_one_line_exit_2(tmp_path: Path) -> None:
    write_scenario(tmp_path, "{name: timm_vit, pretrained: no/such.safetensors}")
    out = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "validate", "s.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(r"model\.pretrained: '.*no/such\.safetensors' does not exist", lines[0]), lines[0]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{name: timm_vit, layout: hf_vit}", r"model\.layout: only used with model\.pretrained"),
        (
            "{name: timm_vit, pretrained: HERE/s.yaml}",
            r"cannot tell the format of 's\.yaml'.*set model\.format",
        ),
        (
            "{name: timm_vit, pretrained: HERE/s.yaml, format: torch, layout: keras}",
            "unknown checkpoint layout 'keras'",
        ),
        ("{name: timm_vit, pretrained: HERE/s.yaml, format: npz}", "unknown checkpoint format 'npz'"),
        ("{name: timm_vit, pretrained: dinov3}", "unknown pretrained name 'dinov3'; expected a"),
    ],
)
def test_scenario_errors(tmp_path: Path, model: str, message: str) -> None:
    from fedsim.config import ConfigError
    from fedsim.loader import load_scenario

    with pytest.raises(ConfigError, match=message):
        load_scenario(write_scenario(tmp_path, model.replace("HERE", str(tmp_path))))


def test_a_checkpoint_that_does_not_fit_fails_validation(tmp_path: Path) -> None:
    from fedsim.config import ConfigError
    from fedsim.loader import load_scenario

    save_file(
        {k: v.contiguous() for k, v in tiny_vit(0).features.state_dict().items()}, tmp_path / "v.safetensors"
    )
    arch = "patch_size: 4, dim: 48, depth: 2, heads: 2"
    model = f"{{name: timm_vit, pretrained: {tmp_path}/v.safetensors, {arch}}}"
    with pytest.raises(
        ConfigError,
        match=r"model\.pretrained: pretrained '.*v\.safetensors' \(timm_vit layout\) "
        r"does not fit the model: misshapen key cls_token \(1, 1, 32\) in the file, \(1, 1, 48\)",
    ):
        load_scenario(write_scenario(tmp_path, model))


def test_pfedpg_runs_on_a_pretrained_timm_vit(tmp_path: Path) -> None:
    """The prompt algorithms take the loaded ViT as their frozen backbone (no pretraining)."""
    from fedsim.loader import load_scenario
    from fedsim.methods.pfedpg import backbone_of, frozen_encoder

    src = tiny_vit(3)
    save_file({k: v.contiguous() for k, v in src.features.state_dict().items()}, tmp_path / "vit.safetensors")
    model = "{name: timm_vit, pretrained: vit.safetensors, patch_size: 4, dim: 32, depth: 2, heads: 2}"
    path = write_scenario(tmp_path, model)
    path.write_text(path.read_text() + "algorithm: {name: pfedpg, num_prompts: 2}\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scenario = load_scenario(Path("s.yaml"))
    finally:
        os.chdir(cwd)
    assert scenario.model.pretrained == str(tmp_path / "vit.safetensors")
    backbone = backbone_of(scenario)
    assert backbone.path == tmp_path / "vit.safetensors" and not backbone.pretrained_here
    encoder = frozen_encoder(scenario)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(encoder(x), src.features(x))
        assert encoder(x, torch.zeros(2, 32)).shape == (2, 32)


# -- the real files of `make pretrained` -------------------------------------------------------


def installed(name: str) -> Path:
    path = CATALOG[name].path()
    if path is None:
        pytest.skip(f"{name} is not installed (make pretrained)")
    return path


def test_dinov2_vits14_matches_onnxruntime() -> None:
    import onnxruntime as ort

    path = installed("dinov2-vits14")
    graph = onnx.load(str(path))
    final = next(n.output[0] for n in reversed(graph.graph.node) if n.name.startswith("/backbone/layernorm/"))
    graph.graph.output.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = session.run([final], {"input_image": x.numpy()})[0]
    model = build_model("timm_vit", {}, (3, 224, 224), 10, 0).eval()
    fitted = load_pretrained(model.features, "dinov2-vits14")
    assert (fitted.layout, fitted.prefix, fitted.resized) == (
        "hf_dinov2",
        "backbone.",
        True,
    )  # 37x37 -> 16x16
    with torch.no_grad():
        ours = model.features.norm(model.features.blocks(model.features.tokens(x))).numpy()
    assert np.abs(ours - reference).max() < 1e-4  # 1.35e-5 measured


def test_efficientnet_lite0_and_minilm_load_by_name() -> None:
    installed("efficientnet-lite0")
    model = build_model("efficientnet_lite", {}, (3, 56, 56), 10, 0)
    assert load_pretrained(model.features, "efficientnet-lite0").loaded == len(model.features.state_dict())
    from fedsim.pretrained.text import text_encoder

    installed("minilm-l6-v2")
    text = text_encoder("minilm-l6-v2")
    with torch.no_grad():
        e = torch.nn.functional.normalize(
            text.embed(["a red circle", "a crimson circle", "stock prices fell"]), dim=1
        )
    assert e.shape == (3, 384)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_creamfl_encoders_from_the_pretrained_checkpoints() -> None:
    """Captions in fedsim's vocabulary reach MiniLM as the WordPiece tokenizer would give them."""
    installed("minilm-l6-v2")
    installed("efficientnet-lite0")
    from fedsim.data.captions import encode
    from fedsim.models.multimodal import MultimodalParams, build_multimodal
    from fedsim.models.wordpiece import WordPiece
    from fedsim.pretrained import resolve

    params = MultimodalParams(
        embed_dim=8, server_image_encoder="efficientnet_lite0", server_text_encoder="minilm"
    )
    net = build_multimodal(params, (3, 32, 32), 200, image=True, text=True, server=True)
    captions = [
        "a small red circle at the top left, on a striped background",
        "a big blue square",
        "triangle",
    ]
    ids, mask = net.text.wordpiece_ids(encode(captions))  # type: ignore[union-attr]
    reference = WordPiece(resolve("minilm-l6-v2").parent / "vocab.txt").encode(captions, 64)
    assert torch.equal(ids, reference[0]) and torch.equal(mask, reference[1].long())
    with torch.no_grad():
        z_text, z_image = net.encode("text", encode(captions)), net.encode("image", torch.randn(2, 3, 32, 32))
    assert z_text.shape == (3, 8) and z_image.shape == (2, 8)
    assert torch.allclose(z_text.norm(dim=1), torch.ones(3)) and torch.allclose(
        z_image.norm(dim=1), torch.ones(2)
    )
    lite = build_model("efficientnet_lite", {}, (3, 32, 32), 10, 0).features
    load_pretrained(lite, "efficientnet-lite0")
    assert torch.equal(net.image.backbone._conv_stem.weight, lite._conv_stem.weight)  # type: ignore[union-attr]
