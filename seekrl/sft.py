"""Warm start by supervised fine-tuning (TRL `SFTTrainer`) on scripted AdaSearch trajectories.

A scripted trajectory is rendered exactly as the rollout engine would produce it: the protocol's prompt through
the chat template, then the policy's turns, with each search answered by the real retrieval client and formatted
by the protocol. Only the policy's tokens are trained (`labels` is -100 on the prompt and on every retrieved
observation), so the warm start learns facts only from the answers it is shown, never from search results.

`world_examples` scripts a naive AdaSearch policy over a synthetic world (seekrl.envs.world):
- knowledge: every question about a *known* person answered directly (each phrasing in use): in parametric mode, and
  in phase 2 also in adaptive mode after a `yes` that is context, not a target (so the decision stays naive);
- search: search-mode demonstrations (person, then city for two-hop questions, then the answer read from the
  results) about the world's *practice* people only, who are never evaluated;
- adaptive: every question, of evaluated and practice people, with an assessment drawn at random (`yes` with
  probability `p_yes`, independent of what the model knows): after `yes` the answer from knowledge, after `no`
  the search trajectory. Only what the naive policy could truly say is trained:
  - after `yes` about a person the model does not know, the assessment alone: the answer that follows is a
    random value of the right kind, context but not a target. Trained guesses would teach the model to answer
    with the most common guess whoever is asked about, and recall of the known facts after `yes` collapsed
    to that when we tried;
  - after `no` about an evaluated unknown person, the assessment and the query on the name: the rest (a
    second query naming the city, the answer) would teach the person's facts.
So the warm start knows the known people's facts, can search, and decides at random: F1_aware near chance; and
no token it is trained to produce states an unknown person's fact, so "unknown" stays unknown.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger(__name__)

IGNORE = -100


def render_trajectory(tokenizer, protocol, question: str, turns: list[str], client=None, topk: int = 3,
                      trained_turns: Collection[int] | None = None,
                      messages: list[dict] | None = None) -> dict[str, list[int]]:
    """`input_ids` and `labels` of one scripted trajectory: `turns` are the policy's texts, in order; only the turns
    whose indices are in `trained_turns` are trained (all when None), the rest are context like the observations.
    The prompt is the protocol's for `question` unless `messages` replaces it.

    After each turn the protocol reacts as in a rollout: a search runs through `client` and its formatted result
    (or the failure text) follows, untrained; a corrective text is an error here (a script must be valid).
    """
    from seekrl.agents.protocol import TrajectoryState

    prompt = tokenizer.apply_chat_template(messages or protocol.messages(question), tokenize=False,
                                           add_generation_prompt=True)
    input_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(input_ids)
    state = TrajectoryState()
    for i, turn in enumerate(turns):
        ids = tokenizer(turn, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trained_turns is None or i in trained_turns else [IGNORE] * len(ids)
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


class _DrillClient:
    """Answers a reading drill's searches: the drill person's passage for their name, the city's for its name
    (the world's own passage formats); the other `topk - 1` results are other passages of the world."""

    def __init__(self, passages: dict[str, str], filler: list[str], rng: random.Random):
        self.passages, self.filler, self.rng = passages, filler, rng

    def search(self, queries: list[str], topk: int) -> list[list[dict]]:
        results = []
        for query in queries:
            first = self.passages[query.strip()]
            rest = self.rng.sample([f for f in self.filler if f != first], topk - 1) if topk > 1 else []
            results.append([{"contents": text} for text in (first, *rest)])
        return results


def reading_examples(world, tokenizer, count: int, seed: int = 0, topk: int = 2, max_turns: int = 3,
                     bare: bool = False) -> list[dict[str, list[int]]]:
    """`count` search-mode trajectories about *drill people*, each made up for one trajectory: a name that
    recombines the world's first and last names (never the name of anyone in the world), a random birthplace
    among the world's cities and a random job; the question is of any kind, the turns are the search policy's.

    No drill person's facts can be memorised (every trajectory has its own), so the trained answer can only be
    predicted by reading it from the retrieved passage (its observation, itself untrained). The world's practice
    people cannot teach that: shown a few dozen times each, their facts are memorised, and the tiny model then
    answers from memory and never learns to read (search EM on unknown people stayed at guessing).

    `bare` drops the search prompt's instructions (the user turn is only `Question: ...`), a third of the
    length: the tiny world model learnt to read from bare drills in fewer drills, each cheaper, and then carried
    the skill over to the full prompt after a few thousand full drills (it did not without them).
    """
    from seekrl.agents import make_protocol
    from seekrl.envs.world import QUESTION_KINDS, Person, city_passage, person_passage

    rng = random.Random(seed)
    search = make_protocol("adasearch", max_turns, adasearch_mode="search")
    people = world.people + world.practice
    taken = {p.name for p in people}
    firsts = sorted({p.name.split()[0] for p in people})
    lasts = sorted({p.name.split()[1] for p in people})
    if len(firsts) * len(lasts) <= len(taken):
        raise ValueError("the world has too few names to make up drill people from")
    jobs = sorted({p.job for p in people})
    filler = [d["contents"] for d in world.passages()]
    kinds = list(enumerate(QUESTION_KINDS))
    templates = [world.templates(k) for k, _ in kinds]
    examples = []
    for _ in range(count):
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        while name in taken:
            name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        city = rng.choice(world.cities)
        person = Person(name, city.name, rng.choice(jobs), False)
        k, (kind, hops, _) = rng.choice(kinds)
        answer = world.answer(person, kind)
        client = _DrillClient({name: person_passage(person), city.name: city_passage(city)}, filler, rng)
        question = rng.choice(templates[k]).format(name=name)
        messages = [{"role": "user", "content": f"Question: {question}\n"}] if bare else None
        examples.append(render_trajectory(tokenizer, search, question, _search_turns(world, person, hops, answer),
                                          client, topk, messages=messages))
    return examples


def world_examples(world, tokenizer, client, seed: int = 0, p_yes: float = 0.5, knowledge_repeats: int = 10,
                   search_repeats: int = 4, adaptive_repeats: int = 8, topk: int = 2,
                   max_turns: int = 3) -> dict[str, list[dict[str, list[int]]]]:
    """Scripted SFT examples over `world` (module docstring), shuffled with `seed`: `knowledge` (each known fact
    once per phrasing, parametric mode) and `policy` (the naive policy, with `knowledge_repeats` copies of the
    knowledge so the second phase does not wash it out).

    Each practice search demonstration is shown `search_repeats` times, and each question `adaptive_repeats` times
    in adaptive mode, every copy with its own random assessment: so the warm start says yes with probability about
    `p_yes` on every question instead of memorising one coin flip per question.
    """
    from seekrl.agents import make_protocol

    rng = random.Random(seed)
    parametric = make_protocol("adasearch", max_turns, adasearch_mode="parametric")
    search = make_protocol("adasearch", max_turns, adasearch_mode="search")
    people = world.people + world.practice
    values = {"birthplace": [c.name for c in world.cities], "job": sorted({p.job for p in people}),
              "country": sorted({c.country for c in world.cities})}
    practice = {p.name for p in world.practice}
    knowledge, examples = [], []
    for person in people:
        for kind, question, answer, hops in world.all_phrasings(person):
            if person.known:
                known = render_trajectory(tokenizer, parametric, question, [f"<answer> {answer} </answer>"])
                knowledge.append(known)
                # Half the copies recall the fact where the adaptive agent does, after a `yes` that is context:
                # recall learnt in one prompt does not carry over to another in a model this small.
                after_yes = render_trajectory(
                    tokenizer, make_protocol("adasearch", max_turns, adasearch_mode="adaptive"), question,
                    ["<assessment> yes </assessment>", f"<answer> {answer} </answer>"], trained_turns=(1,))
                examples += [known] * (knowledge_repeats - knowledge_repeats // 2)
                examples += [after_yes] * (knowledge_repeats // 2)
            if person.name in practice:
                searched = render_trajectory(tokenizer, search, question,
                                             _search_turns(world, person, hops, answer), client, topk)
                examples += [searched] * search_repeats
            for _ in range(adaptive_repeats):
                adaptive = make_protocol("adasearch", max_turns, adasearch_mode="adaptive")
                trained = None
                if rng.random() < p_yes:
                    said = answer if person.known else rng.choice(values[kind])
                    turns = ["<assessment> yes </assessment>", f"<answer> {said} </answer>"]
                    if not person.known:
                        trained = (0,)  # the assessment; the guess is context
                else:
                    turns = ["<assessment> no </assessment>", *_search_turns(world, person, hops, answer)]
                    if not person.known and person.name not in practice:
                        trained = (0, 1)  # the assessment and the query on the person's name
                examples.append(render_trajectory(tokenizer, adaptive, question, turns, client, topk, trained))
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
        # Random batches, not grouped by length: length goes with the kind of trajectory (a direct answer is short,
        # a search long), so length-grouped batches each held one kind, and what follows an assessment was always
        # the same within a batch. The tiny model then learnt the marginal (its closing tags and its action after
        # the assessment ignored the context, ~0.5 each) instead of the conditional it learns from mixed batches.
        train_sampling_strategy="random",
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
