"""Warm start by supervised fine-tuning (TRL `SFTTrainer`) on scripted AdaSearch trajectories.

A scripted trajectory is rendered exactly as the rollout engine would produce it: the protocol's prompt through
the chat template, then the policy's turns, with each search answered by the real retrieval client and formatted
by the protocol. Only the policy's tokens are trained (`labels` is -100 on the prompt and on every retrieved
observation), so the warm start learns facts only from the answers it is shown, never from search results.

`world_examples` scripts a naive AdaSearch policy over a synthetic world (seekrl.envs.world):
- knowledge: every question about a *known* person answered directly in parametric mode (both phrasings);
- search: every question answered by searching (person, then city for two-hop questions) in search mode;
- adaptive: every question with an assessment drawn at random (`yes` with probability `p_yes`, independent
  of what the model knows): after `yes` the answer from knowledge (the true one for a known person, a random
  value of the right kind for an unknown one: the naive policy guesses), after `no` the search trajectory.
So the warm start knows the known people's facts, can search, and decides at random: F1_aware near chance.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

log = logging.getLogger(__name__)

IGNORE = -100


def render_trajectory(tokenizer, protocol, question: str, turns: list[str], client=None,
                      topk: int = 3) -> dict[str, list[int]]:
    """`input_ids` and `labels` of one scripted trajectory: `turns` are the policy's texts, in order.

    After each turn the protocol reacts as in a rollout: a search runs through `client` and its formatted result
    (or the failure text) follows, untrained; a corrective text is an error here (a script must be valid).
    """
    from seekrl.agents.protocol import TrajectoryState

    prompt = tokenizer.apply_chat_template(protocol.messages(question), tokenize=False, add_generation_prompt=True)
    input_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(input_ids)
    state = TrajectoryState()
    for i, turn in enumerate(turns):
        ids = tokenizer(turn, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids
        reaction = protocol.react(protocol.parse(turn), state, ended=False)
        if reaction.tool_failure:
            raise ValueError(f"scripted turn {turn!r} is not a valid action of {protocol.name}")
        if reaction.kind == "finish":
            if i != len(turns) - 1:
                raise ValueError(f"the script goes on after the trajectory finished at {turn!r}")
            break
        if reaction.kind == "search":
            state.num_searches += 1
            docs = client.search([reaction.query], topk)[0]
            observation = protocol.format_observation(docs)
        else:
            observation = reaction.text
        if observation:
            obs = tokenizer(observation, add_special_tokens=False)["input_ids"]
            input_ids += obs
            labels += [IGNORE] * len(obs)
    return {"input_ids": input_ids, "labels": labels}


def _search_turns(world, person, kind_hops: int, answer: str) -> list[str]:
    turns = [f"<search> {person.name} </search>"]
    if kind_hops == 2:
        turns.append(f"<search> {person.city} </search>")
    return turns + [f"<answer> {answer} </answer>"]


def world_examples(world, tokenizer, client, seed: int = 0, p_yes: float = 0.5, knowledge_repeats: int = 10,
                   search_repeats: int = 4, adaptive_repeats: int = 8, topk: int = 2,
                   max_turns: int = 3) -> dict[str, list[dict[str, list[int]]]]:
    """Scripted SFT examples over `world` (module docstring), shuffled with `seed`: `knowledge` (each known fact
    once per phrasing, parametric mode) and `policy` (the naive policy, with `knowledge_repeats` copies of the
    knowledge so the second phase does not wash it out).

    Each search trajectory is shown `search_repeats` times, and each question `adaptive_repeats` times in adaptive
    mode, every copy with its own random assessment: so the warm start says yes with probability about `p_yes` on
    every question instead of memorising one coin flip per question.
    """
    from seekrl.agents import make_protocol

    rng = random.Random(seed)
    parametric = make_protocol("adasearch", max_turns, adasearch_mode="parametric")
    search = make_protocol("adasearch", max_turns, adasearch_mode="search")
    values = {"birthplace": [c.name for c in world.cities], "job": sorted({p.job for p in world.people}),
              "country": sorted({c.country for c in world.cities})}
    kinds = ["birthplace", "job", "country"]
    knowledge, examples = [], []
    for person in world.people:
        for index, (question, answer, hops) in enumerate(world.all_phrasings(person)):
            kind = kinds[index // 2]
            if person.known:
                known = render_trajectory(tokenizer, parametric, question, [f"<answer> {answer} </answer>"])
                knowledge.append(known)
                examples += [known] * knowledge_repeats
            searched = render_trajectory(tokenizer, search, question, _search_turns(world, person, hops, answer),
                                         client, topk)
            examples += [searched] * search_repeats
            for _ in range(adaptive_repeats):
                adaptive = make_protocol("adasearch", max_turns, adasearch_mode="adaptive")
                if rng.random() < p_yes:
                    said = answer if person.known else rng.choice(values[kind])
                    turns = ["<assessment> yes </assessment>", f"<answer> {said} </answer>"]
                else:
                    turns = ["<assessment> no </assessment>", *_search_turns(world, person, hops, answer)]
                examples.append(render_trajectory(tokenizer, adaptive, question, turns, client, topk))
    rng.shuffle(examples)
    return {"knowledge": knowledge, "policy": examples}


def run_sft(model_path: str, examples: list[dict], out_dir: str | Path, epochs: float = 1.0,
            learning_rate: float = 1e-3, batch_size: int = 16, seed: int = 0, report_to: list[str] | None = None,
            progress: bool = True, scheduler: str = "cosine") -> tuple[Path, list[dict]]:
    """TRL SFTTrainer on pre-tokenised examples; saves the model and tokenizer to out_dir/final.

    Returns (final directory, the trainer's log history).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from seekrl.models import load_model, load_tokenizer

    out = Path(out_dir)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype="float32")
    args = SFTConfig(
        output_dir=str(out / "hf"),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type=scheduler,
        warmup_steps=0.05,
        per_device_train_batch_size=batch_size,
        # Knowledge answers are short, search trajectories long: batching similar lengths saves the padding.
        train_sampling_strategy="group_by_length",
        logging_steps=10,
        save_strategy="no",
        report_to=report_to or [],
        use_cpu=True,
        # TRL's defaults are for GPUs: bf16 autocast and activation checkpointing make a CPU step ~15x slower.
        bf16=False,
        gradient_checkpointing=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer)
    trainer.train()
    final = out / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(final)
    return final, trainer.state.log_history
