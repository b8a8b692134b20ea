"""transformers integration: `attn_implementation="seekrl_block_topk"`, prefill dense, decode block top-k.

Importing this module registers the attention function with transformers' `AttentionInterface` and, for the
masks, the SDPA mask builder with `AttentionMaskInterface` (without it transformers builds no mask at all for
an unknown implementation, and left padding would be lost). Then:

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="seekrl_block_topk")
    configure(model, BlockTopKSettings(block_size=64, topk=16, local=128))
    model.generate(**batch, cache=BlockTopKCache(model.config, block_size=64))

Prefill (more than one query token), training, and the layers in `dense_layers` run transformers' SDPA path.
A decode step (one query token) in the other layers attends the sink block(s), the local window and the top-k
blocks of each sequence (`seekrl.kernels.block_sparse`); pads (from the attention mask) are never attended, and
each sequence's mask must be one contiguous run of ones (left and/or right padding; a mask with holes raises).
Non-causal attention that shares the implementation (a VLM's vision tower) always runs SDPA.
`BlockTopKCache` keeps per-block mean keys as blocks fill, so a decode step never rereads the whole cache to rank
blocks; with a plain DynamicCache the block means are recomputed from the keys at every step (same selection up
to rounding: the cache keeps them in the keys' dtype).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from seekrl.kernels.block_sparse import block_topk_attention

ATTN_IMPLEMENTATION = "seekrl_block_topk"
# Attribute names: the settings on each attention module, the block means on the key tensor a cache returns.
SETTINGS_ATTR = "seekrl_block_topk"
BLOCK_MEANS_ATTR = "seekrl_block_means"


@dataclass(frozen=True)
class BlockTopKSettings:
    """Sparse decode settings; the attended budget per step is about local + block_size x topk (+ sink)."""

    block_size: int = 64
    topk: int = 16
    sink_blocks: int = 1
    local: int = 128
    dense_layers: tuple[int, ...] = (0,)
    impl: str = "auto"


def settings_from_section(kinetics, impl: str = "auto") -> BlockTopKSettings:
    """Settings from a recipe's `kinetics` section (seekrl.config.KineticsSection)."""
    return BlockTopKSettings(block_size=kinetics.block_size, topk=kinetics.topk, sink_blocks=kinetics.sink_blocks,
                             local=kinetics.local, dense_layers=tuple(kinetics.dense_layers), impl=impl)


def configure(model: torch.nn.Module, settings: BlockTopKSettings) -> int:
    """Give every causal (decoder) attention module of `model` the settings; returns how many were configured."""
    count = 0
    for module in model.modules():
        is_decoder_attention = getattr(module, "is_causal", False) and getattr(module, "layer_idx", None) is not None
        if is_decoder_attention and hasattr(module, "num_key_value_groups"):
            setattr(module, SETTINGS_ATTR, settings)
            count += 1
    if count == 0:
        raise ValueError(f"no causal attention module with a layer_idx found in {type(model).__name__}")
    return count


def _valid_range(mask: torch.Tensor | None, bsz: int, kv_len: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(kv_start, kv_end) per sequence from the decode mask [B, 1, 1, S] (bool: True attends; or additive float)."""
    if mask is None:
        return torch.zeros(bsz, dtype=torch.int64, device=device), torch.full((bsz,), kv_len, device=device)
    row = mask[:, 0, -1, :kv_len]  # [B, S]
    valid = row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2
    valid = valid.expand(bsz, kv_len)
    start = valid.int().argmax(1)
    end = kv_len - valid.flip(1).int().argmax(1)
    # Block selection assumes one contiguous run of valid tokens per sequence (left and/or right padding only).
    if not bool((valid.sum(1) == end - start).all()):
        raise ValueError(f"{ATTN_IMPLEMENTATION} needs each sequence's attention mask to be one contiguous run of "
                         "ones (left or right padding only); got a mask with holes")
    return start, end


def block_topk_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The AttentionInterface function: query [B, H_q, T, D], key, value [B, H_kv, S, D] -> ([B, T, H_q, D], None)."""
    # Non-causal attention that shares the model's implementation (a VLM's vision tower) is not decoding: SDPA.
    if not getattr(module, "is_causal", True) or getattr(module, "layer_idx", None) is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    settings = getattr(module, SETTINGS_ATTR, None)
    if settings is None:
        raise RuntimeError(f"attn_implementation={ATTN_IMPLEMENTATION!r} needs its settings: call "
                           "seekrl.kernels.attention.configure(model, BlockTopKSettings(...)) after loading")
    dense = (query.shape[2] != 1 or module.training or module.layer_idx in settings.dense_layers
             or kwargs.get("sliding_window") is not None)
    if dense:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bsz, _, _, dim = query.shape
    kv_start, kv_end = _valid_range(attention_mask, bsz, key.shape[2], query.device)
    means = getattr(key, BLOCK_MEANS_ATTR, None)  # [B, H_kv, NBF, D] or None
    out = block_topk_attention(
        query[:, :, 0], key, value,  # [B, H_q, D], [B, H_kv, S, D]
        block_size=settings.block_size, topk=settings.topk, sink_blocks=settings.sink_blocks, local=settings.local,
        seq_lens=kv_end, kv_start=kv_start, block_means=means, scale=scaling, impl=settings.impl,
    )
    return out[:, None], None  # [B, 1, H_q, D]


class BlockMeanLayer(DynamicLayer):
    """A DynamicLayer that also keeps the mean key of every full block (in the keys' dtype), added as blocks fill."""

    def __init__(self, block_size: int):
        super().__init__()
        self.block_size = block_size
        self.block_means: torch.Tensor | None = None  # [B, H_kv, NBF, D]

    def _extend_means(self) -> None:
        keys = self.keys  # [B, H_kv, S, D]
        bsz, h_kv, length, dim = keys.shape
        full = length // self.block_size
        done = 0 if self.block_means is None else self.block_means.shape[2]
        if full > done:
            new = keys[:, :, done * self.block_size: full * self.block_size].float()
            new = new.reshape(bsz, h_kv, full - done, self.block_size, dim).mean(3).to(keys.dtype)
            self.block_means = new if self.block_means is None else torch.cat([self.block_means, new], dim=2)
        elif self.block_means is None:
            self.block_means = keys.new_zeros(bsz, h_kv, 0, dim)
        setattr(keys, BLOCK_MEANS_ATTR, self.block_means)

    def _recompute_means(self) -> None:
        self.block_means = None
        if self.is_initialized and self.keys is not None and self.keys.dim() == 4:
            self._extend_means()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        self._extend_means()
        return keys, values

    def reset(self) -> None:
        super().reset()
        self.block_means = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._recompute_means()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._recompute_means()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._recompute_means()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._recompute_means()


class BlockTopKCache(DynamicCache):
    """A DynamicCache whose layers keep block mean keys for `seekrl_block_topk` decoding."""

    def __init__(self, config, block_size: int):
        num_layers = config.get_text_config(decoder=True).num_hidden_layers
        Cache.__init__(self, layers=[BlockMeanLayer(block_size) for _ in range(num_layers)])


def register() -> None:
    """Register the attention function and its mask builder with transformers (idempotent)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, block_topk_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


register()
