"""The tiny offline models round-trip through save_pretrained / the Auto classes and generate."""

from __future__ import annotations

import hashlib

import torch
from PIL import Image

from seekrl.models import load_model, load_processor, load_tokenizer, resolve_model_path
from seekrl.testing import SPECIAL_TOKENS, build_tiny_text_model, tiny_model_dir


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_tokenizer_round_trip(tiny_text_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_text_dir)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.padding_side == "left"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "<think>Röntgen?</think><search> who discovered X-rays </search>"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    # Special tokens are single ids, never split into pieces.
    for special in SPECIAL_TOKENS:
        assert tok(special)["input_ids"] == [tok.convert_tokens_to_ids(special)]
    prompt = tok.apply_chat_template([{"role": "user", "content": "Who wrote Hamlet?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n"


def test_text_model_round_trip_and_generate(tiny_text_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_text_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    model.save_pretrained(tmp_path / "again")
    reloaded = load_model(tmp_path / "again")
    assert _weights_digest(reloaded) == _weights_digest(model)

    tok = load_tokenizer(tiny_text_dir)
    prompts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "The capital of France is"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert out.shape == (2, batch["input_ids"].shape[1] + 6)
    # Left padding: the prompts end at the same column, so new tokens start right after.
    assert (batch["attention_mask"][:, -1] == 1).all()
    # Greedy decoding is deterministic and the batch agrees with single-sequence generation.
    single = tok(prompts[1:], return_tensors="pt")
    alone = model.generate(**single, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(alone[0, -6:], out[1, -6:])


def test_builds_are_deterministic_for_a_seed(tmp_path):
    a = load_model(build_tiny_text_model(tmp_path / "a", seed=3))
    b = load_model(build_tiny_text_model(tmp_path / "b", seed=3))
    c = load_model(build_tiny_text_model(tmp_path / "c", seed=4))
    assert _weights_digest(a) == _weights_digest(b) != _weights_digest(c)


def test_cache_returns_the_same_directory(tiny_cache, tiny_text_dir):
    assert tiny_model_dir("text", cache_dir=tiny_cache) == tiny_text_dir


def test_vl_model_round_trip_and_generate(tiny_vl_dir, tmp_path):
    processor = load_processor(tiny_vl_dir)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    model = load_model(tiny_vl_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>What is shown?" in text
    images = [Image.new("RGB", (120, 90), (200, 30, 30)), Image.new("RGB", (64, 200), (0, 90, 200))]
    batch = processor(text=[text, text], images=images, return_tensors="pt", padding=True)
    grid = batch["image_grid_thw"]
    image_tokens = (batch["input_ids"] == processor.image_token_id).sum(dim=1)
    # One placeholder per merged 2x2 patch group.
    assert image_tokens.tolist() == (grid.prod(dim=1) // 4).tolist()
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)

    # The processor saves and loads back to the same behaviour.
    processor.save_pretrained(tmp_path / "proc")
    again = load_processor(tmp_path / "proc")
    batch2 = again(text=[text, text], images=images, return_tensors="pt", padding=True)
    assert torch.equal(batch2["input_ids"], batch["input_ids"])
    assert torch.allclose(batch2["pixel_values"], batch["pixel_values"])


def test_tiny_names_resolve_to_built_models(monkeypatch, tiny_cache):
    monkeypatch.setenv("SEEKRL_CACHE", str(tiny_cache / "named"))
    path = resolve_model_path("seekrl-tiny-text")
    assert (tiny_cache / "named" / "tiny").as_posix() in path
    assert resolve_model_path("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"
