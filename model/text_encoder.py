"""Caption embeddings from a local `transformers` encoder (DESIGN §6: local weights only).

The release encodes captions with Gemma-2-2B-it (hidden 2304, 300 tokens); any encoder
saved with `save_pretrained` (weights and tokenizer in one folder) works, provided
`DiTConfig.text_dim` equals its hidden size. Needs the optional `transformers` package.
"""

from __future__ import annotations

from pathlib import Path

import torch


class TextEncoder:
    """Tokenizer + encoder loaded once from a local folder; `encode` gives [B, L, C_text]."""

    def __init__(self, path: str | Path, *, max_length: int = 300, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        """path: folder with a saved model and tokenizer; max_length: tokens per caption."""
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"TextEncoder: {folder} has no config.json (expected a save_pretrained folder)")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
        # Decoder-only encoders (Gemma) and encoder-decoder ones (T5) expose their encoder stack.
        self.model = (model.get_encoder() if hasattr(model, "get_encoder") and model.config.is_encoder_decoder else model)
        self.model.to(device).eval()
        self.max_length, self.device = max_length, torch.device(device)

    @property
    def dim(self) -> int:
        """Width of the embeddings (set `DiTConfig.text_dim` to it)."""
        return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, L, C_text] (last hidden state) and mask [B, L] bool of the captions.

        An empty caption still yields its special tokens, so every row has a real token."""
        tokens = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        hidden = self.model(**tokens).last_hidden_state
        return hidden, tokens["attention_mask"].bool()
