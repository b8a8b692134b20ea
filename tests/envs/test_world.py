"""The synthetic quickstart world: deterministic, consistent, and searchable by name."""

from __future__ import annotations

import json

import pytest

from seekrl.data import read_qa
from seekrl.envs.index import load_index
from seekrl.envs.world import generate_world, load_world, write_world


def test_world_is_deterministic_and_splits_known_people():
    a, b = generate_world(seed=3, num_people=10), generate_world(seed=3, num_people=10)
    assert a.people == b.people and a.cities == b.cities
    assert generate_world(seed=4, num_people=10).people != a.people
    assert sum(p.known for p in a.people) == 5
    assert len({p.name for p in a.people}) == 10


def test_practice_people_are_searchable_but_never_asked_about(tmp_path):
    plain, world = generate_world(seed=2, num_people=6), generate_world(seed=2, num_people=6, num_practice=4)
    assert world.people == plain.people and world.cities == plain.cities  # appended: the rest of the world holds
    assert len(world.practice) == 4 and not any(p.known for p in world.practice)
    assert len({p.name for p in world.people + world.practice}) == 10
    asked = {q["person"] for split in ("train", "heldout") for q in world.questions(split)}
    assert asked == {p.name for p in world.people}
    paths = write_world(world, tmp_path / "w")
    assert load_world(tmp_path / "w").practice == world.practice
    index = load_index(paths["index"])
    rows, _ = index.search([p.name for p in world.practice], 1)
    for person, row in zip(world.practice, rows):
        assert index.store.doc(int(row[0]))["contents"].startswith(f'"{person.name}"')


def test_answers_follow_the_facts_and_phrasings_differ_between_splits():
    world = generate_world(seed=0, num_people=6)
    train, heldout = world.questions("train"), world.questions("heldout")
    assert len(train) == len(heldout) == 18
    assert not {q["question"] for q in train} & {q["question"] for q in heldout}
    by_id = {q["id"]: q for q in train}
    person = world.people[2]
    assert by_id["train-2-birthplace"]["golden_answers"] == [person.city]
    assert by_id["train-2-job"]["golden_answers"] == [person.job]
    assert by_id["train-2-country"]["golden_answers"] == [world.country_of(person.city)]
    assert by_id["train-2-country"]["hops"] == 2
    with pytest.raises(ValueError, match="unknown split 'test'"):
        world.questions("test")


def test_a_second_training_phrasing_adds_questions_and_leaves_the_heldout_set_alone(tmp_path):
    one, two = generate_world(seed=0, num_people=6), generate_world(seed=0, num_people=6, train_phrasings=2)
    assert two.people == one.people and two.questions("heldout") == one.questions("heldout")
    train = two.questions("train")
    assert train[:18] == one.questions("train") and len(train) == 36 and len({q["id"] for q in train}) == 36
    second = {q["id"]: q for q in train[18:]}
    assert second["train-2-job-p2"]["question"] == f"What job does {two.people[2].name} have?"
    assert second["train-2-job-p2"]["golden_answers"] == [two.people[2].job]
    assert not {q["question"] for q in train} & {q["question"] for q in two.questions("heldout")}
    # the known facts are taught in every phrasing either split asks
    asked = {q["question"] for split in ("train", "heldout") for q in two.questions(split)
             if q["person"] == two.people[0].name}
    assert {q for _, q, _, _ in two.all_phrasings(two.people[0])} == asked
    assert len(one.all_phrasings(one.people[0])) == 6 and len(two.all_phrasings(two.people[0])) == 9
    write_world(two, tmp_path / "w", build_bm25=False)
    assert load_world(tmp_path / "w").train_phrasings == 2
    with pytest.raises(ValueError, match="train_phrasings must be 1 or 2, got 3"):
        generate_world(seed=0, train_phrasings=3)


def test_written_world_loads_as_qa_and_bm25_finds_each_person_first(tmp_path):
    world = generate_world(seed=1, num_people=12)
    paths = write_world(world, tmp_path / "w")
    assert load_world(tmp_path / "w").people == world.people
    records = read_qa(paths["heldout"]).records
    assert len(records) == 36 and records[0].answers == world.questions("heldout")[0]["golden_answers"]
    index = load_index(paths["index"])
    rows, _ = index.search([p.name for p in world.people], 1)
    docs = [index.store.doc(int(r[0])) for r in rows]
    for person, doc in zip(world.people, docs):
        assert doc["contents"].startswith(f'"{person.name}"')
    corpus = [json.loads(line) for line in paths["corpus"].read_text().splitlines()]
    assert len(corpus) == 12 + len(world.cities)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_people": 1}, "at least 2 people"),
    ({"known_fraction": 1.0}, "strictly between 0 and 1"),
    ({"num_practice": -1}, "num_practice >= 0"),
])
def test_bad_world_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_world(**kwargs)
