"""The batched multi-turn rollout engine for vision-language policies (Qwen2.5-VL), for Glance-or-Gaze.

Same loop as seekrl.agents.rollout (one token per forward pass for every live sequence, one batched environment
call per turn, observations appended as token ids, the KV cache kept across turns), plus images:

- the prompt: the protocol's chat messages (an image part, then the question) through the processor's chat
  template, then the processor itself with the question's image, so the prompt ids hold the image's placeholder
  tokens (`<|vision_start|>` + one `<|image_pad|>` per merged patch group + `<|vision_end|>`) and the prefill
  gets `pixel_values` and `image_grid_thw`;
- crops shown mid-trajectory: when the protocol's reaction appends images to the state (`GoGState.images`, a
  gaze with `show_crops`), each new image is run through the image processor and inserted as its placeholder
  tokens right after that reaction's observation text. The observation forward pass gets those images' pixels,
  so the policy sees the crop from the next token on. Image tokens are observation tokens: `env_mask` 0,
  logprob 0. An image is never cut: when the text plus the image do not fit in the token budget, the trajectory
  ends (stop_reason "length");
- positions: Qwen2.5-VL's multimodal RoPE (3 position ids per token: time, height, width). `mrope_positions`
  computes them per chunk exactly as the model's own `get_rope_index` does for the whole sequence (text tokens
  advance all three by one; an image's tokens take its grid of positions and advance the next text position by
  the larger side of the merged grid), so the training forward pass, which recomputes them from the complete
  sequence, sees the same positions the rollout sampled with. The engine passes them explicitly every call;
- what a trajectory carries (`VLTrajectory`): every image whose tokens are in its prompt or completion, in
  order (`images`), their `pixel_values` and `image_grid_thw`, for the trainer's forward pass; `actions` (the
  kind of every executed tool call: search, glance or gaze), the gaze boxes and the image-search results.

Text-only engines are untouched: this module only adds a subclass. Dense attention only (the block top-k decode
kernel is not wired for multimodal positions), which the constructor checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from seekrl.agents.protocol import Reaction
from seekrl.agents.rollout import RolloutConfig, RolloutEngine, Trajectory, sample_tokens

# Qwen2-VL / Qwen2.5-VL vision tokens (the names those tokenizers use).
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"


@dataclass
class VLTrajectory(Trajectory):
    """A rollout of a vision-language policy: a `Trajectory` plus the images it showed (module docstring)."""

    images: list = field(default_factory=list)  # PIL images in token order: the question's, then shown crops
    pixel_values: list = field(default_factory=list)  # one [patches, D] tensor per image
    image_grid_thw: list = field(default_factory=list)  # one (t, h, w) per image
    actions: list[str] = field(default_factory=list)  # kind of each executed tool call: search | glance | gaze
    gazes: list = field(default_factory=list)  # the clamped 0-1000 box of each gaze
    image_results: list = field(default_factory=list)  # entries returned by each glance / gaze

    @property
    def num_images(self) -> int:
        return len(self.images)

    def action_counts(self) -> dict[str, int]:
        return {kind: self.actions.count(kind) for kind in ("search", "glance", "gaze")}


def mrope_positions(ids: list[int], grids: list, start: int, image_token_id: int,
                    merge: int) -> tuple[torch.Tensor, int]:
    """Qwen2-VL M-RoPE position ids of a chunk of tokens that follows `start` positions: ([3, len(ids)], next).

    `grids` is the (t, h, w) patch grid of each image whose placeholder tokens are in `ids`, in order; every
    image's tokens must be in the chunk whole. Matches `get_rope_index` of the model on the whole sequence.
    """
    out: list[torch.Tensor] = []
    pos, i, g = start, 0, iter(grids)
    while i < len(ids):
        if ids[i] != image_token_id:
            j = i
            while j < len(ids) and ids[j] != image_token_id:
                j += 1
            out.append(torch.arange(pos, pos + j - i).expand(3, -1))
            pos += j - i
            i = j
            continue
        t, h, w = (int(v) for v in next(g))
        lh, lw = h // merge, w // merge
        tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(lh) + pos, torch.arange(lw) + pos, indexing="ij")
        out.append(torch.stack([tt + pos, hh, ww]).reshape(3, -1))
        i += t * lh * lw
        pos += max(lh, lw)
    if not out:
        return torch.zeros(3, 0, dtype=torch.long), pos
    return torch.cat(out, dim=1).long(), pos


def render_vl_prompt(processor, protocol, question: str, image) -> tuple[list[int], list[torch.Tensor], list]:
    """(prompt ids, [pixel_values], [(t, h, w)]) of one question about `image`: the protocol's messages through the
    processor's chat template, then the processor with the image (its placeholder expanded to the patch count)."""
    text = processor.apply_chat_template(protocol.messages(question), tokenize=False, add_generation_prompt=True)
    rgb = protocol.new_state(image).image
    if rgb is None:
        raise ValueError("a vision-language prompt needs its image")
    batch = processor(text=[text], images=[rgb], return_tensors="pt")
    grids = [tuple(int(v) for v in g) for g in batch["image_grid_thw"]]
    return batch["input_ids"][0].tolist(), [batch["pixel_values"]], grids


def image_placeholder(processor, image) -> tuple[list[int], torch.Tensor, tuple[int, int, int]]:
    """(ids, pixel_values, grid) of an image inserted mid-trajectory: `<|vision_start|>`, one `<|image_pad|>` per
    merged patch group, `<|vision_end|>`; the ids and pixels the processor would give it in a prompt."""
    out = processor.image_processor(images=[image], return_tensors="pt")
    grid = tuple(int(v) for v in out["image_grid_thw"][0])
    count = grid[0] * grid[1] * grid[2] // (processor.image_processor.merge_size ** 2)
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(VISION_START), *[tok.convert_tokens_to_ids(IMAGE_PAD)] * count,
           tok.convert_tokens_to_ids(VISION_END)]
    return ids, out["pixel_values"], grid


class VLRolloutEngine(RolloutEngine):
    """Rolls out a protocol with images (Glance-or-Gaze) with a Qwen2.5-VL-style policy and its processor.

    `client` serves the protocol's text searches (may be None); image searches go through the protocol's own
    `image_searcher`. `run(questions, images)` takes one image (PIL, bytes or path) per question.
    """

    def __init__(self, model, processor, protocol, client=None, config: RolloutConfig | None = None,
                 seed: int | None = None):
        config = config or RolloutConfig()
        if config.attention != "dense":
            raise ValueError("the vision-language rollout runs dense attention only; set rollout.attention: dense")
        if not hasattr(protocol, "new_state"):
            raise ValueError(f"protocol {protocol.name!r} has no image state; use the gog protocol for images")
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or not hasattr(processor, "image_processor"):
            raise ValueError("a vision-language rollout needs the model's processor (tokenizer + image processor)")
        super().__init__(model, tokenizer, protocol, client, config, seed)
        self.processor = processor
        self.image_token_id = model.config.image_token_id
        self.merge = model.config.vision_config.spatial_merge_size
        # A sampled placeholder would have no pixels behind it (the forward pass then fails): never sample one.
        self.suppressed = [i for i in (model.config.image_token_id, getattr(model.config, "video_token_id", None))
                           if i is not None]

    # --- images -> tokens ----------------------------------------------------------------------------------------

    def render_prompt(self, question: str, image=None):
        """(prompt ids, [pixel_values], [grid]) of one question about `image` (module docstring)."""
        return render_vl_prompt(self.processor, self.protocol, question, image)

    def image_tokens(self, image) -> tuple[list[int], torch.Tensor, tuple[int, int, int]]:
        """Placeholder ids, pixel values and grid of one image inserted into a trajectory."""
        return image_placeholder(self.processor, image)

    # --- running -------------------------------------------------------------------------------------------------

    def run(self, questions: list[str], images: list | None = None,
            interrupt: Callable[[int], bool] | None = None) -> list[VLTrajectory]:
        """Roll out one trajectory per (question, image); repeat a pair to sample a group."""
        if images is None or len(images) != len(questions):
            raise ValueError(f"give one image per question: {len(questions)} questions, "
                             f"{0 if images is None else len(images)} images")
        size = self.config.max_batch_size
        results: list[VLTrajectory] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(questions), size):
                batch_interrupt = None if interrupt is None else (lambda t, start=start: interrupt(start + t))
                results.extend(self._run_vl_batch(questions[start:start + size], images[start:start + size],
                                                  batch_interrupt))
        finally:
            self.model.train(was_training)
        return results

    def run_ids(self, prompts, interrupt=None):
        raise TypeError("VLRolloutEngine renders its prompts with their images: call run(questions, images)")

    def _forward_vl(self, input_ids, attention_mask, position_ids, cache, pixel_values, grids):
        kwargs = {}
        if pixel_values:
            kwargs["pixel_values"] = torch.cat(pixel_values).to(self.model.device, self.model.dtype)
            kwargs["image_grid_thw"] = torch.tensor(grids, dtype=torch.long, device=self.model.device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, **kwargs)
        return out.logits  # [N, T, V]

    @torch.no_grad()
    def _run_vl_batch(self, questions: list[str], images: list,
                      interrupt: Callable[[int], bool] | None = None) -> list[VLTrajectory]:
        cfg = self.config
        device = self.model.device
        states = [self.protocol.new_state(image) for image in images]
        trajs: list[VLTrajectory] = []
        prompt_pixels, prompt_grids, prompt_pos = [], [], []
        next_rope: list[int] = []  # per trajectory: the M-RoPE position of its next token
        for question, state in zip(questions, states):
            ids, pixels, grids = self.render_prompt(question, state.image)
            pos, nxt = mrope_positions(ids, grids, 0, self.image_token_id, self.merge)
            trajs.append(VLTrajectory(prompt_ids=ids, images=[state.image], pixel_values=list(pixels),
                                      image_grid_thw=list(grids)))
            prompt_pixels += pixels
            prompt_grids += grids
            prompt_pos.append(pos)
            next_rope.append(nxt)
        live = list(range(len(questions)))  # trajectory index of each cache row
        interrupted: set[int] = set()

        # Prefill: left-padded prompts, their images in row order.
        width = max(len(t.prompt_ids) for t in trajs)
        n0 = len(trajs)
        ids = torch.full((n0, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n0, width), dtype=torch.long)
        positions = torch.zeros((3, n0, width), dtype=torch.long)
        for row, traj in enumerate(trajs):
            p = len(traj.prompt_ids)
            ids[row, width - p:] = torch.tensor(traj.prompt_ids, dtype=torch.long)
            mask[row, width - p:] = 1
            positions[:, row, width - p:] = prompt_pos[row]
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = self._new_cache()
        logits = self._forward_vl(ids, mask, positions, cache, prompt_pixels, prompt_grids)[:, -1, :]  # [N, V]
        next_pos = torch.tensor(next_rope, dtype=torch.long, device=device)  # [N]

        while live:
            n = len(live)
            turn_ids: list[list[int]] = [[] for _ in range(n)]
            ended = [False] * n
            active = [True] * n
            budgets = [min(cfg.max_new_tokens_per_turn, cfg.max_total_tokens - len(trajs[t].completion_ids))
                       for t in live]
            while True:
                logits[:, self.suppressed] = float("-inf")
                tokens, logps = sample_tokens(logits, cfg.temperature, cfg.top_p, self.generator)
                tokens_l, logps_l = tokens.tolist(), logps.tolist()
                feed = [False] * n
                for row in range(n):
                    if not active[row]:
                        continue
                    traj = trajs[live[row]]
                    token = tokens_l[row]
                    turn_ids[row].append(token)
                    traj.completion_ids.append(token)
                    traj.logprobs.append(logps_l[row])
                    traj.env_mask.append(1)
                    tail = self.tokenizer.decode(turn_ids[row][-self.stop_window:], skip_special_tokens=False)
                    if any(stop in tail for stop in self.stop_strings):
                        active[row] = False
                    elif token in self.eos_ids or len(turn_ids[row]) >= budgets[row]:
                        active[row], ended[row] = False, True
                    elif interrupt is not None and interrupt(live[row]):
                        active[row], ended[row] = False, True
                        interrupted.add(live[row])
                    else:
                        feed[row] = True
                if not any(active):
                    break
                # Waiting rows get a hidden padding column (see seekrl.agents.rollout).
                step_ids = torch.tensor([[tokens_l[r] if feed[r] else self.pad_id] for r in range(n)], device=device)
                step_mask = torch.tensor([[1 if feed[r] else 0] for r in range(n)], device=device)
                mask = torch.cat([mask, step_mask], dim=1)
                step_pos = next_pos[None, :, None].expand(3, -1, -1)  # [3, N, 1] text: all three the same
                logits = self._forward_vl(step_ids, mask, step_pos, cache, None, None)[:, -1, :]
                next_pos = next_pos + step_mask[:, 0]

            reactions: list[Reaction] = []
            executed: list[str | None] = []
            shown_before: list[int] = []
            for row, t in enumerate(live):
                state = states[t]
                state.num_turns += 1
                turn_text = self.tokenizer.decode(turn_ids[row], skip_special_tokens=True)
                searches_before, shown_before_row = state.num_searches, len(state.images)
                if t in interrupted:
                    reaction, action = Reaction("finish"), None
                else:
                    action = self.protocol.parse(turn_text)
                    reaction = self.protocol.react(action, state, ended[row])
                if reaction.tool_failure:
                    state.tool_failures += 1
                reactions.append(reaction)
                shown_before.append(shown_before_row)
                # glance / gaze run inside react (they count a search there); text searches run below.
                image_search = action is not None and action.kind in ("glance", "gaze") and \
                    state.num_searches > searches_before
                executed.append(action.kind if image_search else ("search" if reaction.kind == "search" else None))
            queries = [r.query for r in reactions if r.kind == "search"]
            results = self._search(queries) if queries else None
            obs: dict[int, list[int]] = {}
            obs_images: dict[int, list] = {}
            search_i = 0
            for row, t in enumerate(live):
                traj, state, reaction = trajs[t], states[t], reactions[row]
                if executed[row] is not None:
                    traj.actions.append(executed[row])
                room = cfg.max_total_tokens - len(traj.completion_ids)
                if reaction.kind == "finish":
                    traj.answer = reaction.answer
                    if t in interrupted:
                        traj.stop_reason = "interrupted"
                    else:
                        traj.stop_reason = "answer" if reaction.answer is not None else (
                            "length" if ended[row] and turn_ids[row][-1] not in self.eos_ids else "stopped")
                    traj.truncated = traj.stop_reason == "length"
                    continue
                new_images = []
                if reaction.kind == "search":
                    state.num_searches += 1
                    state.searches.append(reaction.query)
                    docs = results[search_i] if results is not None else None
                    search_i += 1
                    traj.search_results.append(docs)
                    if docs is None:
                        state.tool_failures += 1
                        ids_ = self._observation_ids(self._failed_search_text, min(room, cfg.max_obs_tokens))
                    else:
                        ids_ = self._search_observation(docs, room)
                else:
                    ids_ = self._observation_ids(reaction.text, min(room, cfg.max_obs_tokens))
                    new_images = [self.image_tokens(image) + (image,)
                                  for image in getattr(state, "images", [])[shown_before[row]:]]
                image_ids = [tok for image_ids_, _, _, _ in new_images for tok in image_ids_]
                if room - len(ids_) - len(image_ids) <= 0 or ended[row]:
                    traj.stop_reason = "length"
                    traj.truncated = True
                    continue
                obs[row] = ids_ + image_ids
                obs_images[row] = new_images

            for row, t in enumerate(live):
                trajs[t].turn_tokens.append((len(turn_ids[row]), len(obs.get(row, []))))

            keep = sorted(obs)
            if not keep:
                break
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_pos = mask[index], next_pos[index]
            chunks = [[turn_ids[row][-1]] + obs[row] for row in keep]
            pixels, grids = [], []
            width = max(len(c) for c in chunks)
            ext = torch.full((len(keep), width), self.pad_id, dtype=torch.long)
            ext_mask = torch.zeros((len(keep), width), dtype=torch.long)
            ext_pos = torch.zeros((3, len(keep), width), dtype=torch.long)
            advanced = []
            for i, row in enumerate(keep):
                traj = trajs[live[row]]
                traj.completion_ids.extend(obs[row])
                traj.logprobs.extend([0.0] * len(obs[row]))
                traj.env_mask.extend([0] * len(obs[row]))
                row_grids = []
                for _, pixel_values, grid, image in obs_images[row]:
                    traj.images.append(image)
                    traj.pixel_values.append(pixel_values)
                    traj.image_grid_thw.append(grid)
                    pixels.append(pixel_values)
                    row_grids.append(grid)
                grids += row_grids
                start = int(next_pos[i])
                pos, nxt = mrope_positions(chunks[i], row_grids, start, self.image_token_id, self.merge)
                ext[i, :len(chunks[i])] = torch.tensor(chunks[i], dtype=torch.long)
                ext_mask[i, :len(chunks[i])] = 1
                ext_pos[:, i, :len(chunks[i])] = pos
                advanced.append(nxt)
            ext, ext_mask, ext_pos = ext.to(device), ext_mask.to(device), ext_pos.to(device)
            mask = torch.cat([mask, ext_mask], dim=1)
            all_logits = self._forward_vl(ext, mask, ext_pos, cache, pixels, grids)  # [N, W, V]
            last = torch.tensor([len(c) - 1 for c in chunks], device=device)
            logits = all_logits[torch.arange(len(keep), device=device), last]
            next_pos = torch.tensor(advanced, dtype=torch.long, device=device)
            live = [live[row] for row in keep]
            mask = self._compact(cache, mask)

        for traj, state in zip(trajs, states):
            traj.num_searches, traj.num_turns = state.num_searches, state.num_turns
            traj.tool_failures, traj.decision = state.tool_failures, state.decision
            traj.searches = list(state.searches)
            traj.gazes = list(getattr(state, "gazes", []))
            traj.image_results = list(getattr(state, "image_results", []))
            traj.text = self.tokenizer.decode(traj.completion_ids, skip_special_tokens=True)
            traj.eflops, traj.eflops_dense = self._eflops(traj)
        return trajs


def vision_batch(trajectories: list[VLTrajectory]) -> dict[str, Any]:
    """The images of a batch for a training forward pass over [prompt | completion] rows in this order:
    `pixel_values` [sum patches, D], `image_grid_thw` [sum images, 3], `num_images` per row."""
    pixel_values = [p for t in trajectories for p in t.pixel_values]
    grids = [g for t in trajectories for g in t.image_grid_thw]
    return {
        "pixel_values": torch.cat(pixel_values) if pixel_values else None,
        "image_grid_thw": torch.tensor(grids, dtype=torch.long) if grids else None,
        "num_images": [t.num_images for t in trajectories],
    }
