"""Tiny offline models for tests and the quickstart.

No model hub is reachable here, so seekrl builds its own: a byte-level BPE tokenizer trained locally with
`tokenizers` (Qwen-style chat template, `<|im_start|>` / `<|im_end|>`), a tiny `Qwen2ForCausalLM` and a tiny
`Qwen2_5_VLForConditionalGeneration` with its processor (`Qwen2VLImageProcessorPil`, so no torchvision).
Everything is written with `save_pretrained` and must be loaded back through `AutoTokenizer`,
`AutoModelForCausalLM`, `AutoModelForImageTextToText` and `AutoProcessor` (see `seekrl.models`): the same
code path a real checkpoint takes. Builds are deterministic for a seed and take a few seconds; `tiny_model_dir` caches them.

>>> from seekrl.testing import tiny_model_dir
>>> from transformers import AutoTokenizer
>>> tok = AutoTokenizer.from_pretrained(tiny_model_dir("text"))
>>> tok.decode(tok("<search>Paris</search>")["input_ids"])
'<search>Paris</search>'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Special tokens of the Qwen2 / Qwen2.5-VL families, in their order there.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2.5 chat template, reduced: string content, or a list of {"type": "text"|"image"} parts for VLMs.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

# Text the tokenizer is trained on: the agents' tags and some plain English, so that prompts and actions
# tokenize into a sensible number of pieces. Content does not matter beyond that.
_TRAINING_TEXT = """
<think> I need to find out who wrote the novel. </think> <search> author of the novel </search>
<information> Doc 1(Title: Example) The capital of France is Paris. Doc 2(Title: Another) text </information>
<answer> Paris </answer> <assessment> yes </assessment> <assessment> no </assessment>
<glance></glance> <gaze>[120, 340, 560, 780]</gaze> 0 1 2 3 4 5 6 7 8 9 10 100 1000
Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get
new information. After reasoning, if you find you lack some knowledge, you can call a search engine by
<search> query </search> and it will return the top searched results between <information> and
</information>. You can search as many times as your want. If you find no further external knowledge
needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations.
For example, <answer> Beijing </answer>. Question: who was the first president of the united states?
Which city is the capital of Germany? When did the war end? What is the name of the river that flows through
the city? How many people live in the country? Where was the famous scientist born? What year was it founded?
The quick brown fox jumps over the lazy dog. A man, a plan, a canal: Panama. Röntgen discovered X-rays.
system user assistant You are a helpful assistant. Look at the image and answer the question.
"""


def _training_text() -> str:
    """The text above plus every prompt of the agent protocols, so the tiny models' prompts stay short."""
    from seekrl.agents import adasearch, gog, search_r1

    prompts = [search_r1.PROMPT, search_r1.INVALID_ACTION, adasearch.PARAMETRIC_PROMPT,
               adasearch.ADAPTIVE_PROMPT, *adasearch.INVALID.values(), gog.PROMPT, gog.INVALID_ACTION]
    return _TRAINING_TEXT + "\n".join(prompts)


def train_tokenizer(vocab_size: int = 1024, extra_text: str = ""):
    """Train a byte-level BPE tokenizer with Qwen's pre-tokenizer, special tokens and chat template.

    Returns a `transformers.Qwen2Tokenizer` (the class real Qwen checkpoints load as) with pad =
    `<|endoftext|>`, eos = `<|im_end|>` and left padding (what batched generation needs). The normaliser and
    pre-tokenizer are taken from `Qwen2Tokenizer` itself, so the saved files load back to the same ids.
    Deterministic: the same text always gives the same merges.
    """
    import json

    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    reference = Qwen2Tokenizer().backend_tokenizer
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = reference.normalizer
    bpe.pre_tokenizer = reference.pre_tokenizer
    bpe.decoder = reference.decoder
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = _training_text() + "\n" + extra_text
    bpe.train_from_iterator([line for line in text.splitlines() if line], trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    tok = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(m) for m in trained["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    # Already in the vocabulary (same ids); registering them keeps them from being split.
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    return tok


def tiny_qwen2_config(vocab_size: int, **overrides):
    """A Qwen2 config small enough to train on a CPU in seconds (about 0.1 M parameters)."""
    from transformers import Qwen2Config

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def build_tiny_text_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tokenizer and a randomly initialised tiny `Qwen2ForCausalLM` to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    out = Path(out_dir)
    tok = train_tokenizer()
    config = tiny_qwen2_config(
        len(tok),
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_vl_model(out_dir: str | os.PathLike, seed: int = 0, tokenizer=None, hidden_size: int = 64,
                        num_layers: int = 2, tie_embeddings: bool = True) -> Path:
    """Write a processor and a randomly initialised tiny `Qwen2_5_VLForConditionalGeneration` to `out_dir`.

    The vision tower has 2 blocks of width 32 over 14-pixel patches merged 2x2, so a 56x56 image costs
    4 image tokens; image resolution is bounded by the processor's min/max pixels. `tokenizer` (default: the
    generic one of `train_tokenizer`), `hidden_size` and `num_layers` size the language model;
    `tie_embeddings` shares the input embedding with the output layer.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
    )

    from seekrl.models import image_only_processor

    out = Path(out_dir)
    tok = tokenizer if tokenizer is not None else train_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    hidden, heads = hidden_size, 4
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            # M-RoPE splits the rotary half-dimension (head_dim / 2) over time, height and width.
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": _mrope_section(hidden // heads // 2)},
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            out_hidden_size=hidden,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_embeddings,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        # 56x56 .. 224x224 pixels: 4 .. 64 image tokens per image.
        size={"shortest_edge": 56 * 56, "longest_edge": 224 * 224},
    )
    processor = image_only_processor(Qwen2_5_VLProcessor, image_processor, tok, CHAT_TEMPLATE)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _mrope_section(half: int) -> list[int]:
    """Time / height / width split of the rotary half-dimension, Qwen2.5-VL's 16:24:24 proportions (8 -> 2, 3, 3)."""
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_gog_world_model(world, out_dir: str | os.PathLike, seed: int = 0, hidden_size: int = 128,
                          num_layers: int = 2, vocab_size: int = 2048) -> Path:
    """A randomly initialised tiny Qwen2.5-VL whose tokenizer was also trained on a composite-image world's text
    (seekrl.envs.image_world: names, places, questions, the drills' phrasings): the GoG quickstart's base model.

    Two choices make its places readable (README, the GoG quickstart): the tokenizer sees each place only on a
    line of its own, never after a space, so that " Place" in a caption is never one token (" Ixrelgol" is
    "ĠI", "x", "rel", "gol"; others a lone "Ġ" and the word); and the output layer is not tied to the input
    embedding. With one token per place and tied
    embeddings, 8000 reading drills left the place copied out of the observation at chance (teacher-forced,
    0.06 of 12 places) while names were copied every time; with both changes, 1.00."""
    from seekrl.envs.image_world import QUESTION_KINDS
    from seekrl.gog_sft import SCRIPT_PHRASES

    text = [t.name for t in world.things] + sorted({t.place for t in world.things}) + list(SCRIPT_PHRASES)
    text += [q["question"] for split in ("train", "heldout") for q in world.questions(split)]
    text += [phrasing for kind in QUESTION_KINDS for phrasing in kind[3]]  # the reading drills' own phrasings
    tok = train_tokenizer(vocab_size, extra_text="\n".join(text))
    return build_tiny_vl_model(out_dir, seed=seed, tokenizer=tok, hidden_size=hidden_size, num_layers=num_layers,
                               tie_embeddings=False)


def _build_searcher(out_dir, seed=0):
    return build_tiny_searcher(out_dir, seed=seed)


def _build_gazer(out_dir, seed=0):
    return build_tiny_gazer(out_dir, seed=seed)


_BUILDERS = {"text": build_tiny_text_model, "vl": build_tiny_vl_model, "searcher": _build_searcher,
             "gazer": _build_gazer}


def _source_hash(kind: str = "text") -> str:
    """Hash of the files a tiny model is made from, so that a cached model is rebuilt when they change."""
    import seekrl.agents.adasearch
    import seekrl.agents.gog
    import seekrl.agents.protocol
    import seekrl.agents.search_r1

    h = hashlib.sha256(Path(__file__).read_bytes())
    for module in (seekrl.agents.search_r1, seekrl.agents.adasearch, seekrl.agents.protocol, seekrl.agents.gog):
        h.update(Path(module.__file__).read_bytes())
    if kind == "gazer":
        # The gazer is trained on trajectories rendered by these.
        import seekrl.agents.vlm_rollout
        import seekrl.gog_sft

        for module in (seekrl.agents.vlm_rollout, seekrl.gog_sft):
            h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


def tiny_model_dir(kind: str = "text", cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Return a directory holding the tiny model of `kind` ("text", "vl", "searcher" or "gazer"), building it on
    first use.

    The cache lives in `cache_dir`, else `$SEEKRL_CACHE/tiny`, else `~/.cache/seekrl/tiny`, keyed by the kind,
    the seed and a hash of this file. A build goes to a temporary directory that is renamed into place, so
    concurrent test workers never see half a model.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {sorted(_BUILDERS)}")
    root = Path(cache_dir or os.environ.get("SEEKRL_CACHE", Path.home() / ".cache" / "seekrl")) / "tiny"
    target = root / f"{kind}-seed{seed}-{_source_hash(kind)}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.{os.getpid()}.tmp"
    _BUILDERS[kind](tmp, seed=seed)
    (tmp / "seekrl_tiny.json").write_text(json.dumps({"kind": kind, "seed": seed}))
    try:
        tmp.rename(target)
    except OSError:
        # Another process finished the same build first; theirs is identical.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


# Questions and answers for the tiny searcher's format training; content is irrelevant, the format is learnt.
_FORMAT_QA = [
    ("Who wrote Hamlet?", "William Shakespeare"), ("What is the capital of France?", "Paris"),
    ("Which river flows through Cairo?", "Nile"), ("Who discovered X-rays?", "Wilhelm Röntgen"),
    ("What year did the war end?", "1945"), ("Where was the scientist born?", "Ulm"),
    ("Who founded the company?", "Henry Ford"), ("How many people live in the city?", "2 million"),
    ("Which city is the capital of Germany?", "Berlin"), ("Who was the first president?", "George Washington"),
    ("What is the name of the novel?", "Moby Dick"), ("When was it founded?", "1850"),
]


def _format_transcripts(rng) -> list[tuple[str, str, list[str]]]:
    """(protocol prompt, assistant turns, observations between them) in the Search-R1 and AdaSearch formats."""
    from seekrl.agents.adasearch import ADAPTIVE_PROMPT
    from seekrl.agents.protocol import format_documents
    from seekrl.agents.search_r1 import PROMPT

    # Real questions are longer and stranger than these: add random word sequences of 4 to 40 words so the
    # format does not depend on what the question says.
    words = _TRAINING_TEXT.split()
    qa = list(_FORMAT_QA) + [
        (" ".join(rng.choice(words) for _ in range(rng.randint(4, 40))) + "?", rng.choice(_FORMAT_QA)[1])
        for _ in range(12)
    ]
    out = []
    for question, answer in qa:
        doc = [{"id": "d", "contents": f'"{answer}"\n{answer} is the answer to: {question}'}]
        obs = f"\n\n<information>{format_documents(doc)}</information>\n\n"
        # A fixed query: copying the question is beyond a model this small after seconds of training.
        search = "<think> I need to search. </think><search> more information </search>"
        final = f"<think> I found it. </think><answer> {answer} </answer>"
        # Three of four Search-R1 transcripts search, so that rollouts of this policy exercise the tools.
        out.append((PROMPT.format(question=question), [search, final], [obs]))
        out.append((PROMPT.format(question=question), [search, final], [obs]))
        out.append((PROMPT.format(question=question), [search, search, final], [obs, obs]))
        out.append((PROMPT.format(question=question), [f"<think> I know this. </think><answer> {answer} </answer>"], []))
        out.append((ADAPTIVE_PROMPT.format(question=question),
                    [f"<think> Can I answer? I know this. </think><assessment>yes</assessment><answer> {answer} </answer>"],
                    []))
        for _ in range(2):
            out.append((ADAPTIVE_PROMPT.format(question=question),
                        [f"<think> Can I answer? I am not sure. </think><assessment>no</assessment>{search}", final],
                        [obs]))
    rng.shuffle(out)
    return out


def build_tiny_searcher(out_dir: str | os.PathLike, seed: int = 0, steps: int = 250) -> Path:
    """A tiny text model fine-tuned to follow the Search-R1 / AdaSearch action format.

    Random weights almost never close an action tag, so tests of multi-turn rollouts, and GRPO runs that must
    see searches, start from this: the tiny model after a few seconds of supervised training on templated
    transcripts (search once, twice or not at all; AdaSearch yes/no), with observation tokens masked from the
    loss exactly as in RL. It learns the format, not the answers.
    """
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    base = build_tiny_text_model(out, seed=seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    rng = random.Random(seed)
    examples = []
    for prompt, turns, observations in _format_transcripts(rng):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(ids)
        for i, turn in enumerate(turns):
            piece = tok(turn + ("<|im_end|>" if i == len(turns) - 1 else ""), add_special_tokens=False)["input_ids"]
            ids, labels = ids + piece, labels + piece
            if i < len(observations):
                obs = tok(observations[i], add_special_tokens=False)["input_ids"]
                ids, labels = ids + obs, labels + [-100] * len(obs)
        examples.append((ids, labels))
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    batch_size = 8
    for step in range(steps):
        batch = [examples[(step * batch_size + j) % len(examples)] for j in range(batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    (out / "seekrl_format_training.json").write_text(json.dumps({"steps": steps, "final_loss": loss.item()}))
    return out


def demo_image_world(seed: int = 0, num_train: int = 6, num_heldout: int = 2, tile: int = 28):
    """A small seekrl.envs.image_world over 16 synthetic 64x64 images (no data files): 2x2 composites of
    `tile`-pixel tiles, for tests and the tiny gazer."""
    from seekrl.envs.image_world import SourceImage, _demo_png, generate_image_world

    source = [SourceImage(f"demo{i}", _demo_png(i), ".png", "demo") for i in range(16)]
    return generate_image_world(seed=seed, source=source, num_train=num_train, num_heldout=num_heldout, tile=tile)


def build_tiny_gazer(out_dir: str | os.PathLike, seed: int = 0, steps: int = 150) -> Path:
    """The tiny VLM after a few seconds of supervised training on scripted Glance-or-Gaze trajectories.

    Random weights never close a `<gaze>` tag, so tests of multi-turn VLM rollouts (crops shown mid-trajectory)
    start from this: the tiny VL model trained on seekrl.gog_sft's scripted trajectories over `demo_image_world`
    (gaze at the asked quarter, or glance first), rendered exactly as the VLM rollout engine
    renders them, observations and crops masked. It learns the action format, not the answers.
    """
    import random
    import shutil

    import torch

    from seekrl.agents.gog import GlanceOrGaze
    from seekrl.envs.client import InProcessImageClient
    from seekrl.envs.image_kb import ImageKB
    from seekrl.envs.image_world import write_image_world
    from seekrl.gog_sft import GoGCollator, SFTRecord, build_examples
    from seekrl.models import load_model, load_processor

    out = Path(out_dir)
    base = build_tiny_vl_model(out, seed=seed)
    world = demo_image_world(seed)
    paths = write_image_world(world, out / "world")
    protocol = GlanceOrGaze(max_turns=3, image_searcher=InProcessImageClient(ImageKB.load(paths["index"])),
                            image_topk=1, show_crops=True)
    records = [SFTRecord(q["id"], q["question"], world.composite_image(c), q["golden_answers"], tuple(q["bbox"]))
               for c in world.composites for q in world.questions(c.split) if q["image_id"] == c.id]
    processor = load_processor(base)
    examples, _ = build_examples(processor, protocol, records, seed=seed, samples=2,
                                 mix={"gaze": 0.8, "glance_first": 0.2})
    shutil.rmtree(out / "world")
    model = load_model(base, dtype="float32")
    collate = GoGCollator(processor)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # Linear warm-up over 10 steps, then linear decay to 0.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    model.train()
    for step in range(steps):
        batch = collate(rng.sample(examples, 8))
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    (out / "seekrl_format_training.json").write_text(json.dumps({"steps": steps, "final_loss": loss.item()}))
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """uvicorn serving an ASGI app on a free loopback port in a background thread (tests, benchmarks)."""

    def __init__(self, app, port: int | None = None):
        import threading

        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_retriever_process(index_dir, port: int, *extra: str, timeout_s: float = 60.0):
    """`seekrl retriever serve` as a subprocess on 127.0.0.1:`port`; returns the Popen once /health answers."""
    import subprocess
    import sys
    import time

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "seekrl.cli", "retriever", "serve", "--index", str(index_dir),
                             "--port", str(port), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"retrieval server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"retrieval server did not become healthy in {timeout_s:.0f} s")


def build_world_model(world, out_dir: str | os.PathLike, seed: int = 0, hidden_size: int = 128,
                      num_layers: int = 2, vocab_size: int = 2048) -> Path:
    """A randomly initialised tiny Qwen2 whose tokenizer was also trained on a synthetic world's text
    (seekrl.envs.world), so each fictional name is a token or two: the quickstart's base model."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    text = [d["contents"] for d in world.passages()]
    text += [q["question"] for split in ("train", "heldout") for q in world.questions(split)]
    tok = train_tokenizer(vocab_size, extra_text="\n".join(text))
    config = tiny_qwen2_config(len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                               num_hidden_layers=num_layers, bos_token_id=None, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
