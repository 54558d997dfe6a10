"""Text encoder loaded from a local folder (a tiny random BERT saved in the test)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from wmkit.model.text_encoder import TextEncoder  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "camera", "walks", "through", "the", "room"]


@pytest.fixture
def encoder_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "enc")
    tokenizer.save_pretrained(tmp_path / "enc")
    return tmp_path / "enc"


def test_encode_gives_embeddings_and_mask(encoder_dir):
    enc = TextEncoder(encoder_dir, max_length=10)
    assert enc.dim == 32
    emb, mask = enc.encode(["a camera walks through the room", ""])
    assert emb.shape == (2, 10, 32) and mask.shape == (2, 10)
    assert mask[0].sum() == 8 and mask[1].sum() == 2  # [CLS] … [SEP]; the empty caption keeps both
    again, _ = TextEncoder(encoder_dir, max_length=10).encode(["a camera walks through the room"])
    torch.testing.assert_close(again[0], emb[0])


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TextEncoder(tmp_path / "nothing")
