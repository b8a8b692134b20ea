"""The batched multi-turn rollout engine.

For a batch of prompts the engine generates for every live sequence at once, one token per forward pass, until
each sequence hits a closing action tag, EOS or a length limit. It then parses every sequence's turn with the
protocol, runs all searches of that turn as one batched environment call, and appends each observation as
token ids to the sequences that go on; finished sequences leave the batch (their rows leave the KV cache).

The KV cache is kept across turns: after a turn only the last sampled token and the observation are encoded,
never the history. Sequences that stop early in a turn wait, fed a padding column that the attention mask hides,
so every row of the cache stays aligned; position ids count only real tokens, so RoPE positions are exactly
those of the unpadded sequence.

Token exactness: `completion_ids` is exactly the sampled ids and the observation ids, in order, nothing
re-tokenised; `env_mask` is 1 on sampled tokens and 0 on observation tokens; `logprobs` holds the log-probability
of each sampled token under the distribution it was sampled from (temperature, top-p), 0 on observations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from seekrl.agents.protocol import Protocol, Reaction, TrajectoryState


@dataclass
class RolloutConfig:
    """Limits and sampling of one rollout (the recipe's `rollout` section plus the retrieval top-k)."""

    max_new_tokens_per_turn: int = 256
    max_total_tokens: int = 2048
    max_obs_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    topk: int = 3
    max_batch_size: int = 64
    # "dense" (the model's own attention) or "block_topk" (seekrl.kernels' sparse decode with `block_topk`).
    attention: str = "dense"
    block_topk: Any = None  # seekrl.kernels.attention.BlockTopKSettings when attention == "block_topk"
    hardware: str = "h200"  # Kinetics hardware profile for the eFLOPs each trajectory reports


@dataclass
class Trajectory:
    """One finished rollout."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    text: str = ""
    answer: str | None = None
    num_searches: int = 0
    num_turns: int = 0
    decision: str | None = None
    tool_failures: int = 0
    truncated: bool = False
    stop_reason: str = ""
    searches: list[str] = field(default_factory=list)
    # The documents each search returned, in the order of `searches`; None where the retrieval call failed.
    search_results: list[list[dict] | None] = field(default_factory=list)
    turn_tokens: list[tuple[int, int]] = field(default_factory=list)  # (generated, observation) per turn
    eflops: float = 0.0  # Kinetics cost of this trajectory with the attention it ran with
    eflops_dense: float = 0.0  # the same trajectory with dense attention

    @property
    def num_generated(self) -> int:
        return sum(self.env_mask)


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None):
    """Sample one token per row; return (tokens [N], logprobs [N]) under the sampling distribution.

    temperature 0 is greedy decoding; its log-probabilities are those of the untempered distribution.
    """
    logits = logits.float()  # [N, V]
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)
        logp = torch.log_softmax(logits, dim=-1)
        return tokens, logp.gather(1, tokens[:, None]).squeeze(1)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    logp = torch.log_softmax(logits, dim=-1)
    tokens = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


class RolloutEngine:
    """Runs a protocol with a policy and a retrieval client over batches of questions.

    `client` has `search(queries, topk) -> list[list[{id, contents}]]` and raises `ToolError` on failure
    (seekrl.envs.client); it may be None for protocols without tools.
    """

    def __init__(self, model, tokenizer, protocol: Protocol, client=None, config: RolloutConfig | None = None,
                 seed: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.protocol = protocol
        self.client = client
        self.config = config or RolloutConfig()
        self.generator = torch.Generator(device="cpu")
        if seed is not None:
            self.generator.manual_seed(seed)
        eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = set(eos)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.config.attention not in ("dense", "block_topk"):
            raise ValueError(f"rollout attention must be 'dense' or 'block_topk', got {self.config.attention!r}")
        if self.config.attention == "block_topk":
            self._use_block_topk()
        self.stop_strings = protocol.stop_strings
        # Enough tokens to contain the longest stop string even if every token were one character.
        self.stop_window = max(len(s) for s in self.stop_strings) + 2
        self._failed_search_text = protocol.search_failed_text or protocol.invalid_text

    def _use_block_topk(self) -> None:
        """Switch the policy's decode attention to block top-k (prefill and training stay dense SDPA)."""
        from seekrl.kernels.attention import ATTN_IMPLEMENTATION, BlockTopKSettings, configure

        if self.config.block_topk is None:
            self.config.block_topk = BlockTopKSettings()
        if self.model.config._attn_implementation != ATTN_IMPLEMENTATION:
            self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        configure(self.model, self.config.block_topk)

    def _new_cache(self):
        from transformers import DynamicCache

        if self.config.attention == "block_topk":
            from seekrl.kernels.attention import BlockTopKCache

            return BlockTopKCache(self.model.config, self.config.block_topk.block_size)
        return DynamicCache()

    def _eflops(self, traj: Trajectory) -> tuple[float, float]:
        """(actual, dense) Kinetics eFLOPs of one trajectory (decode cost, its turns summed)."""
        from seekrl.kernels.kinetics import BlockTopK, trajectory_eflops

        cfg = self.config
        dense = trajectory_eflops(self.model.config, len(traj.prompt_ids), traj.turn_tokens, 1, cfg.hardware)
        if cfg.attention != "block_topk":
            return float(dense), float(dense)
        sparse = BlockTopK(cfg.block_topk.block_size, cfg.block_topk.topk, cfg.block_topk.local)
        actual = trajectory_eflops(self.model.config, len(traj.prompt_ids), traj.turn_tokens, 1, cfg.hardware,
                                   sparse=sparse)
        return float(actual), float(dense)

    def render_prompt(self, question: str) -> list[int]:
        """Token ids of the protocol's prompt for `question`, through the tokenizer's chat template."""
        text = self.tokenizer.apply_chat_template(self.protocol.messages(question), tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def run(self, questions: list[str], interrupt: Callable[[int], bool] | None = None) -> list[Trajectory]:
        """Roll out one trajectory per question (repeat a question to sample a group)."""
        return self.run_ids([self.render_prompt(q) for q in questions], interrupt)

    def run_ids(self, prompts: list[list[int]], interrupt: Callable[[int], bool] | None = None) -> list[Trajectory]:
        """Roll out one trajectory per prompt given as token ids, in batches of `max_batch_size`.

        `interrupt(i)`, when given, is asked after every sampled token of prompt i; True ends that trajectory
        there (stop_reason "interrupted", no answer), keeping what it has so far. A server uses it for deadlines.
        """
        size = self.config.max_batch_size
        results: list[Trajectory] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), size):
                batch_interrupt = None if interrupt is None else (lambda t, start=start: interrupt(start + t))
                results.extend(self._run_batch(prompts[start:start + size], batch_interrupt))
        finally:
            self.model.train(was_training)
        return results

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True)
        return out.logits  # [N, T, V]

    def _observation_ids(self, text: str, budget: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[:max(0, budget)]

    def _search_observation(self, docs: list[dict], budget: int) -> list[int]:
        """Observation ids for search results, documents cut so that the closing tag always survives."""
        text = self.protocol.format_observation(docs)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = min(self.config.max_obs_tokens, budget)
        if len(ids) <= limit:
            return ids
        empty = self.protocol.format_observation([])
        head, _, tail = empty.partition("</information>")
        head_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        tail_ids = self.tokenizer("</information>" + tail, add_special_tokens=False)["input_ids"]
        body = self.tokenizer(text[len(head):text.rindex("</information>")], add_special_tokens=False)["input_ids"]
        keep = max(0, limit - len(head_ids) - len(tail_ids))
        return (head_ids + body[:keep] + tail_ids)[:limit]

    @torch.no_grad()
    def _run_batch(self, prompts: list[list[int]], interrupt: Callable[[int], bool] | None = None) -> list[Trajectory]:
        cfg = self.config
        device = self.model.device
        trajs = [Trajectory(prompt_ids=list(p)) for p in prompts]
        states = [TrajectoryState() for _ in prompts]
        live = list(range(len(prompts)))  # trajectory index of each cache row
        interrupted: set[int] = set()

        # Prefill: left-padded prompts.
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # [N, T]
        cache = self._new_cache()
        logits = self._forward(ids, mask, positions, cache)[:, -1, :]  # [N, V]
        next_pos = mask.sum(dim=1)  # [N] RoPE position of each row's next real token

        while live:
            n = len(live)
            turn_ids: list[list[int]] = [[] for _ in range(n)]
            ended = [False] * n  # stopped at EOS or a length limit (not at an action tag)
            active = [True] * n
            budgets = [min(cfg.max_new_tokens_per_turn, cfg.max_total_tokens - len(trajs[t].completion_ids))
                       for t in live]
            while True:
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
                # Rows that are done with this turn are fed a hidden padding column to keep the batch aligned;
                # their last sampled token is fed with the observation after the turn.
                step_ids = torch.tensor([[tokens_l[r] if feed[r] else self.pad_id] for r in range(n)], device=device)
                step_mask = torch.tensor([[1 if feed[r] else 0] for r in range(n)], device=device)
                mask = torch.cat([mask, step_mask], dim=1)
                logits = self._forward(step_ids, mask, next_pos[:, None], cache)[:, -1, :]
                next_pos = next_pos + step_mask[:, 0]

            # React to every turn; collect the searches of this turn for one batched call.
            reactions: list[Reaction] = []
            for row, t in enumerate(live):
                traj, state = trajs[t], states[t]
                state.num_turns += 1
                turn_text = self.tokenizer.decode(turn_ids[row], skip_special_tokens=True)
                reaction = Reaction("finish") if t in interrupted else self.protocol.react(
                    self.protocol.parse(turn_text), state, ended[row])
                if reaction.tool_failure:
                    state.tool_failures += 1
                reactions.append(reaction)
            queries = [r.query for r in reactions if r.kind == "search"]
            results: list[list[dict]] | None = None
            if queries:
                results = self._search(queries)
            obs: dict[int, list[int]] = {}
            search_i = 0
            for row, t in enumerate(live):
                traj, state, reaction = trajs[t], states[t], reactions[row]
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
                if room - len(ids_) <= 0 or ended[row]:
                    # No room left to act on the observation (or the turn hit its token limit mid-action).
                    traj.stop_reason = "length"
                    traj.truncated = True
                    continue
                obs[row] = ids_

            for row, t in enumerate(live):
                trajs[t].turn_tokens.append((len(turn_ids[row]), len(obs.get(row, []))))

            keep = sorted(obs)
            if not keep:
                break
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_pos = mask[index], next_pos[index]
            # Extension chunk per continuing row: its last sampled token, then the observation (right-padded).
            chunks = [[turn_ids[row][-1]] + obs[row] for row in keep]
            for row in keep:
                traj = trajs[live[row]]
                traj.completion_ids.extend(obs[row])
                traj.logprobs.extend([0.0] * len(obs[row]))
                traj.env_mask.extend([0] * len(obs[row]))
            width = max(len(c) for c in chunks)
            ext = torch.full((len(keep), width), self.pad_id, dtype=torch.long)
            ext_mask = torch.zeros((len(keep), width), dtype=torch.long)
            for i, chunk in enumerate(chunks):
                ext[i, :len(chunk)] = torch.tensor(chunk, dtype=torch.long)
                ext_mask[i, :len(chunk)] = 1
            ext, ext_mask = ext.to(device), ext_mask.to(device)
            mask = torch.cat([mask, ext_mask], dim=1)
            ext_pos = next_pos[:, None] + (ext_mask.cumsum(dim=1) - 1).clamp(min=0)
            all_logits = self._forward(ext, mask, ext_pos, cache)  # [N, W, V]
            last = torch.tensor([len(c) - 1 for c in chunks], device=device)
            logits = all_logits[torch.arange(len(keep), device=device), last]
            next_pos = next_pos + ext_mask.sum(dim=1)
            live = [live[row] for row in keep]
            mask = self._compact(cache, mask)

        for traj, state in zip(trajs, states):
            traj.num_searches, traj.num_turns = state.num_searches, state.num_turns
            traj.tool_failures, traj.decision = state.tool_failures, state.decision
            traj.searches = list(state.searches)
            traj.text = self.tokenizer.decode(traj.completion_ids, skip_special_tokens=True)
            traj.eflops, traj.eflops_dense = self._eflops(traj)
        return trajs

    @staticmethod
    def _compact(cache, mask: torch.Tensor) -> torch.Tensor:
        """Drop the hidden columns of every row from the cache: left-padded, one contiguous run of real tokens.

        Waiting rows and right-padded observations leave masked columns inside a row; removing them keeps the
        cache as long as the longest real sequence and gives block top-k attention the contiguous rows it needs.
        Keys carry their RoPE positions already, so moving them changes nothing they compute.
        """
        width = int(mask.sum(dim=1).max())
        if width == mask.shape[1] and bool((mask[:, 1:] >= mask[:, :-1]).all()):
            return mask  # already left-padded with no hidden columns
        # A stable sort puts each row's masked columns first and its real ones after, both in order.
        order = torch.sort(mask, dim=1, stable=True).indices[:, -width:]  # [N, W]
        for layer in cache.layers:
            index = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, index)  # [N, H_kv, W, D]
            layer.values = layer.values.gather(2, index)
            if hasattr(layer, "_recompute_means"):
                layer._recompute_means()
        return mask.gather(1, order)

    def _search(self, queries: list[str]) -> list[list[dict]] | None:
        """One batched environment call for all searches of a turn; None when the tool failed."""
        from seekrl.envs.client import ToolError

        if self.client is None:
            return None
        try:
            return self.client.search(queries, self.config.topk)
        except ToolError:
            return None
