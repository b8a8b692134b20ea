"""transformers integration: `attn_implementation="seekrl_block_topk"` with the block-mean cache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from seekrl.kernels import attention as seekrl_attention
from seekrl.kernels.attention import BlockTopKCache, BlockTopKSettings, configure

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,  # ~88 tokens: 22 blocks of 4
    "Which city is the capital of Germany? When did the war end?",  # shorter: left padded
]


@pytest.fixture(scope="module")
def models(tiny_text_dir):
    tok = AutoTokenizer.from_pretrained(tiny_text_dir)
    dense = AutoModelForCausalLM.from_pretrained(tiny_text_dir, attn_implementation="sdpa").eval()
    sparse = AutoModelForCausalLM.from_pretrained(tiny_text_dir, attn_implementation="seekrl_block_topk").eval()
    return tok, dense, sparse


def _generate(model, tok, cache=None, steps=12):
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    assert tok.padding_side == "left" and batch["attention_mask"][1, 0] == 0  # the second prompt is padded
    extra = {} if cache is None else {"cache": cache}
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=steps, do_sample=False, pad_token_id=tok.pad_token_id,
                             output_scores=True, return_dict_in_generate=True, **extra)
    return out.sequences, torch.stack(out.scores, 1)  # [B, L], [B, steps, V]


def _count_sparse_calls(monkeypatch):
    calls = []
    real = seekrl_attention.block_topk_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("block_means") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(seekrl_attention, "block_topk_attention", counting)
    return calls


def test_budget_covering_the_context_gives_the_dense_greedy_tokens(models, monkeypatch):
    tok, dense, sparse = models
    calls = _count_sparse_calls(monkeypatch)
    configure(sparse, BlockTopKSettings(block_size=4, topk=32, sink_blocks=1, local=4, dense_layers=(0,)))
    ref_tokens, ref_scores = _generate(dense, tok)
    tokens, scores = _generate(sparse, tok, cache=BlockTopKCache(sparse.config, block_size=4))
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=1e-4)
    # 11 decode steps (the first token comes from the prefill) x 1 sparse layer (layer 0 stays dense),
    # all with the cache's block means.
    assert len(calls) == 11 and all(calls)


def test_small_budget_changes_the_logits_and_the_cache_matches_recomputation(models):
    tok, dense, sparse = models
    configure(sparse, BlockTopKSettings(block_size=4, topk=1, sink_blocks=1, local=4, dense_layers=()))
    _, ref_scores = _generate(dense, tok)
    _, cached_scores = _generate(sparse, tok, cache=BlockTopKCache(sparse.config, block_size=4))
    _, plain_scores = _generate(sparse, tok)  # DynamicCache: block means recomputed from the keys every step
    # 12 of ~90 tokens attended: the sparse path is really in use.
    assert (cached_scores - ref_scores).abs().max() > 1e-3
    torch.testing.assert_close(cached_scores, plain_scores, atol=1e-5, rtol=1e-5)


def test_cache_block_means_track_full_blocks(models):
    tok, _, sparse = models
    cache = BlockTopKCache(sparse.config, block_size=4)
    configure(sparse, BlockTopKSettings(block_size=4, topk=2, local=4))
    _generate(sparse, tok, cache=cache, steps=6)
    layer = cache.layers[1]
    keys = layer.keys  # [B, H_kv, S, D]
    full = keys.shape[2] // 4
    expected = keys[:, :, : full * 4].float().reshape(*keys.shape[:2], full, 4, -1).mean(3)
    torch.testing.assert_close(layer.block_means, expected, atol=1e-6, rtol=1e-6)


def test_mask_with_holes_is_rejected():
    mask = torch.tensor([[True, False, True, True]])[:, None, None, :]
    with pytest.raises(ValueError, match="contiguous"):
        seekrl_attention._valid_range(mask, 1, 4, torch.device("cpu"))
    start, end = seekrl_attention._valid_range(torch.tensor([[False, False, True, True]])[:, None, None, :], 1, 4,
                                               torch.device("cpu"))
    assert start.tolist() == [2] and end.tolist() == [4]


def test_missing_settings_name_the_fix(tiny_text_dir):
    tok = AutoTokenizer.from_pretrained(tiny_text_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_dir, attn_implementation="seekrl_block_topk").eval()
    with pytest.raises(RuntimeError, match="configure"):
        _generate(model, tok, steps=2)


def test_settings_from_the_recipe_section():
    from seekrl.config import KineticsSection

    settings = seekrl_attention.settings_from_section(
        KineticsSection(block_size=32, topk=8, local=64, sink_blocks=2, dense_layers=[0, 5]))
    assert settings == BlockTopKSettings(block_size=32, topk=8, sink_blocks=2, local=64, dense_layers=(0, 5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_generate_on_gpu_uses_the_triton_kernel(models, monkeypatch):
    tok, dense, sparse = models
    calls = _count_sparse_calls(monkeypatch)
    dense_gpu, sparse_gpu = dense.to("cuda"), sparse.to("cuda")
    try:
        configure(sparse_gpu, BlockTopKSettings(block_size=4, topk=32, sink_blocks=1, local=4, impl="triton"))
        batch = tok(TEXTS, return_tensors="pt", padding=True).to("cuda")
        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, output_scores=True,
                  return_dict_in_generate=True)
        with torch.no_grad():
            ref = dense_gpu.generate(**batch, **kw)
            out = sparse_gpu.generate(**batch, **kw, cache=BlockTopKCache(sparse_gpu.config, block_size=4))
        assert torch.equal(out.sequences, ref.sequences)
        torch.testing.assert_close(torch.stack(out.scores), torch.stack(ref.scores), atol=1e-4, rtol=1e-4)
        assert len(calls) == 11
    finally:
        dense.to("cpu")
        sparse.to("cpu")


def test_vision_language_model_keeps_the_vision_tower_dense(tiny_vl_dir, monkeypatch):
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from seekrl.models import load_processor

    calls = _count_sparse_calls(monkeypatch)
    processor = load_processor(tiny_vl_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=[text], images=[Image.new("RGB", (56, 56), (200, 10, 10))], return_tensors="pt")
    dense = AutoModelForImageTextToText.from_pretrained(tiny_vl_dir, attn_implementation="sdpa").eval()
    sparse = AutoModelForImageTextToText.from_pretrained(tiny_vl_dir, attn_implementation="seekrl_block_topk").eval()
    # Only the language model's layers are configured; the vision tower shares the implementation but stays SDPA.
    assert configure(sparse, BlockTopKSettings(block_size=4, topk=16, local=4)) == \
        sparse.config.text_config.num_hidden_layers
    kw = dict(max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        ref = dense.generate(**batch, **kw)
        out = sparse.generate(**batch, **kw, cache=BlockTopKCache(sparse.config, block_size=4))
    assert torch.equal(out, ref)
    assert len(calls) == 5  # 5 decode steps x 1 sparse text layer (layer 0 dense)
