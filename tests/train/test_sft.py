"""Scripted SFT trajectories: rendered like rollouts, observations never trained, naive decisions at random."""

from __future__ import annotations

import pytest

from seekrl.agents import make_protocol
from seekrl.envs.client import InProcessClient
from seekrl.envs.index import load_index
from seekrl.envs.world import generate_world, write_world
from seekrl.models import load_tokenizer
from seekrl.sft import IGNORE, reading_examples, render_trajectory, world_examples
from seekrl.testing import build_world_model


@pytest.fixture(scope="module")
def world_setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    world = generate_world(seed=0, num_people=8, num_practice=4)
    paths = write_world(world, out / "world")
    model_dir = build_world_model(world, out / "model", hidden_size=32, num_layers=1)
    client = InProcessClient(load_index(paths["index"]), default_topk=2)
    return world, load_tokenizer(model_dir), client


def test_search_trajectory_trains_the_policy_tokens_only(world_setup):
    world, tok, client = world_setup
    person = world.people[0]
    protocol = make_protocol("adasearch", 3, adasearch_mode="search")
    turns = [f"<search> {person.name} </search>", f"<answer> {person.city} </answer>"]
    example = render_trajectory(tok, protocol, f"Where was {person.name} born?", turns, client, topk=2)
    ids, labels = example["input_ids"], example["labels"]
    trained = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert trained == "".join(turns)
    untrained = tok.decode([i for i, lab in zip(ids, labels) if lab == IGNORE])
    # The retrieved passage (with the answer in it) is in the input but never a target.
    assert f"{person.name} was born in {person.city}" in untrained and "<information>" in untrained
    prompt = tok.apply_chat_template(protocol.messages(f"Where was {person.name} born?"), tokenize=False,
                                     add_generation_prompt=True)
    assert tok.decode(ids).startswith(prompt)


def test_invalid_scripts_are_refused(world_setup):
    world, tok, client = world_setup
    adaptive = make_protocol("adasearch", 3, adasearch_mode="adaptive")
    with pytest.raises(ValueError, match="not a valid action"):
        render_trajectory(tok, adaptive, "Where?", ["<answer> x </answer>"], client)
    parametric = make_protocol("adasearch", 3, adasearch_mode="parametric")
    with pytest.raises(ValueError, match="goes on after the trajectory finished"):
        render_trajectory(tok, parametric, "Where?", ["<answer> x </answer>", "<answer> y </answer>"], client)


def test_naive_policy_decides_at_random_and_only_known_facts_are_taught(world_setup):
    world, tok, client = world_setup
    examples = world_examples(world, tok, client, seed=0, knowledge_repeats=2, search_repeats=1,
                              adaptive_repeats=20)
    known = [p for p in world.people if p.known]
    assert len(examples["knowledge"]) == 6 * len(known)
    texts = [tok.decode([i for i, lab in zip(e["input_ids"], e["labels"]) if lab != IGNORE])
             for e in examples["policy"]]
    decided = [t for t in texts if t.startswith("<assessment>")]
    assert len(decided) == 20 * 6 * (len(world.people) + len(world.practice))
    yes_rate = sum("yes" in t.split("</assessment>")[0] for t in decided) / len(decided)
    assert 0.4 < yes_rate < 0.6
    # The assessment does not depend on who is known: about half yes for known and unknown people alike.
    for group in (known, [p for p in world.people if not p.known]):
        names = [p.name for p in group]
        mine = [e for e, t in zip(examples["policy"], texts) if t.startswith("<assessment>")
                and any(n in tok.decode(e["input_ids"]) for n in names)]
        rate = sum("<assessment> yes" in tok.decode(e["input_ids"]) for e in mine) / len(mine)
        assert 0.35 < rate < 0.65
    # Search demonstrations are about practice people only.
    practice = {p.name for p in world.practice}
    demos = [e for e, t in zip(examples["policy"], texts) if t.startswith("<search>")]
    assert demos and all(any(n in tok.decode(e["input_ids"]) for n in practice) for e in demos)
    # No trained token about an evaluated unknown person states a fact or a guess: only the assessment, and after
    # "no" the query on the name.
    for unknown in [p for p in world.people if not p.known]:
        mine = [t for e, t in zip(examples["policy"], texts) if unknown.name in tok.decode(e["input_ids"])]
        assert {t.replace(" ", "") for t in mine} == {
            "<assessment>yes</assessment>", f"<assessment>no</assessment><search>{unknown.name}</search>"
            .replace(" ", "")}
    # A known person's facts are trained after "yes" and after searching.
    person = known[0]
    mine = [t for e, t in zip(examples["policy"], texts) if person.name in tok.decode(e["input_ids"])]
    assert any(t.startswith("<assessment> yes") and f"<answer> {person.city} </answer>" in t for t in mine)


def test_reading_drills_are_about_made_up_people_and_answered_from_the_passage(world_setup):
    world, tok, _ = world_setup
    drills = reading_examples(world, tok, 60, seed=3, topk=2)
    assert len(drills) == 60
    names = {p.name for p in world.people + world.practice}
    firsts, lasts = {n.split()[0] for n in names}, {n.split()[1] for n in names}
    cities = {c.name: c.country for c in world.cities}
    jobs = {p.job for p in world.people + world.practice}
    seen_names, kinds = set(), set()
    for drill in drills:
        text = tok.decode(drill["input_ids"])
        trained = tok.decode([i for i, lab in zip(drill["input_ids"], drill["labels"]) if lab != IGNORE])
        untrained = tok.decode([i for i, lab in zip(drill["input_ids"], drill["labels"]) if lab == IGNORE])
        query = trained.split("<search>")[1].split("</search>")[0].strip()
        # A new person (never one of the world's), named with the world's name tokens.
        assert query not in names and query.split()[0] in firsts and query.split()[1] in lasts
        seen_names.add(query)
        answer = trained.split("<answer>")[1].split("</answer>")[0].strip()
        # The answer is a fact of the right kind, stated in a retrieved passage (untrained), not in the prompt.
        born = untrained.split(f"{query} was born in ")[1].split(".")[0]
        assert born in cities
        if "country" in text.split("Question:")[1].split("\n")[0]:
            kinds.add("country")
            assert trained.count("<search>") == 2 and answer == cities[born]
            assert f"{born} is a city in {answer}" in untrained
        elif answer in jobs:
            kinds.add("job")
            assert f"{query} works as a {answer}" in untrained
        else:
            kinds.add("birthplace")
            assert answer == born
        assert answer not in text.split("<|im_start|>assistant")[0]
        assert untrained.count("Doc 1") == trained.count("<search>") and "Doc 2" in untrained  # topk 2
    assert kinds == {"birthplace", "job", "country"} and len(seen_names) > 40
    # Bare drills are the same trajectories under a prompt that is only the question.
    full, bare = reading_examples(world, tok, 5, seed=4, topk=2), reading_examples(world, tok, 5, seed=4, topk=2,
                                                                                 bare=True)
    for f, b in zip(full, bare):
        f_text, b_text = tok.decode(f["input_ids"]), tok.decode(b["input_ids"])
        question = f_text.split("Question: ")[1].split("\n")[0]
        assert "<search>" in f_text.split("Question:")[0] and "<search>" not in b_text.split("Question:")[0]
        assert b_text.split("<|im_end|>")[0].endswith(f"user\nQuestion: {question}\n")
        assert b_text.split("<|im_start|>assistant")[1] == f_text.split("<|im_start|>assistant")[1]
        trained = [i for i, lab in zip(f["input_ids"], f["labels"]) if lab != IGNORE]
        assert trained == [i for i, lab in zip(b["input_ids"], b["labels"]) if lab != IGNORE]


def test_a_second_training_phrasing_is_taught_with_the_known_facts_and_drilled(world_setup):
    world, tok, client = world_setup
    two = generate_world(seed=0, num_people=8, num_practice=4, train_phrasings=2)  # same people and corpus
    known = [p for p in two.people if p.known]
    examples = world_examples(two, tok, client, seed=0, knowledge_repeats=1, search_repeats=0, adaptive_repeats=1)
    assert len(examples["knowledge"]) == 9 * len(known)
    taught = {tok.decode(e["input_ids"]).split("Question: ")[1].split("\n")[0] for e in examples["knowledge"]}
    person = known[0]
    assert f"What job does {person.name} have?" in taught and f"What does {person.name} work as?" in taught

    def drilled(w):
        return {tok.decode(d["input_ids"]).split("Question: ")[1].split("\n")[0].split()[0]
                for d in reading_examples(w, tok, 60, seed=3, topk=2, bare=True)}

    # Drills ask in the phrasings the world uses: the third one ("Name the ...", "What job ...") only with two.
    assert "Name" not in drilled(world) and "Name" in drilled(two)
