"""A synthetic knowledge world for the offline quickstart: fictional people, cities and countries.

Every fact is made up, so nothing a model knows comes from anywhere but this world, and which facts a model
"knows" is decided here: a person is *known* (their facts are taught to the warm-start model, seekrl.sft) or
*unknown* (their facts are only in the corpus, so only search finds them). That split is what AdaSearch has to
learn to tell apart.

The world, for a seed:
- people with a birthplace (a city) and an occupation; cities lie in countries;
- *practice* people, in the corpus but never asked about: the warm start's search demonstrations are about
  them, so it learns to search and read the results without ever being trained to say an unknown person's
  facts (a search trajectory's answer is a trained token: shown one about an evaluated person, the model
  would memorise that person's facts and "unknown" would stop meaning anything);
- one passage per person (`"Name"\\nName was born in City. Name works as a job.`) and one per city, in the
  wiki-18 `{id, contents}` layout, searched with BM25 (seekrl.envs.index);
- questions of three kinds: birthplace and occupation (single-hop: one search on the person finds the answer)
  and country of birth (two-hop: the person's passage gives the city, the city's passage the country);
- each question in up to three phrasings. The held-out set uses phrasing B, the RL training set phrasing A (and C
  with `train_phrasings=2`), so no held-out question is ever seen by the RL stages; every phrasing in use is in
  the warm start's knowledge (what the model "learnt in pre-training").

>>> world = generate_world(seed=0, num_people=8)
>>> len(world.people), sum(p.known for p in world.people)
(8, 4)
>>> q = world.questions("train")[0]
>>> q["question"].startswith("Where was"), q["golden_answers"] == [world.people[0].city]
(True, True)
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

SYLLABLES = ["ka", "lo", "mir", "ta", "ven", "dra", "sul", "bri", "no", "qua", "rel", "zan", "tor", "mei", "vas",
             "gol", "pra", "shen", "ul", "dor", "fen", "ix", "hal", "rou"]
JOBS = ["glassblower", "cartographer", "beekeeper", "astronomer", "weaver", "shipwright", "falconer", "potter"]

# (kind, hops, (phrasing A, phrasing B, phrasing C)); B is the held-out one, A and C train
QUESTION_KINDS = [
    ("birthplace", 1, ("Where was {name} born?", "In which city was {name} born?",
                       "Name the city where {name} was born.")),
    ("job", 1, ("What is the occupation of {name}?", "What does {name} work as?", "What job does {name} have?")),
    ("country", 2, ("In which country was {name} born?", "Which country is the birthplace of {name} in?",
                    "Name the country where {name} was born.")),
]
SPLITS = ("train", "heldout")
HELDOUT_PHRASING = 1
TRAIN_PHRASINGS = (0, 2)  # in this order: `train_phrasings` takes the first 1 or 2


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    job: str
    known: bool


@dataclass(frozen=True)
class City:
    name: str
    country: str


@dataclass
class World:
    seed: int
    people: list[Person]
    cities: list[City]
    practice: list[Person] = field(default_factory=list)
    train_phrasings: int = 1

    def phrasings(self, split: str) -> list[int]:
        """Indices into each kind's phrasings that `split` asks in: the held-out one, or the first
        `train_phrasings` of the others."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        return [HELDOUT_PHRASING] if split == "heldout" else list(TRAIN_PHRASINGS[:self.train_phrasings])

    def country_of(self, city: str) -> str:
        return next(c.country for c in self.cities if c.name == city)

    def passages(self) -> list[dict]:
        """The corpus: one passage per person (practice people too) and per city, `{id, contents}` with contents
        `"Title"\\ntext`."""
        docs = [{"id": f"{prefix}{i}", "contents": person_passage(p)}
                for prefix, group in (("p", self.people), ("x", self.practice)) for i, p in enumerate(group)]
        docs += [{"id": f"c{i}", "contents": city_passage(c)} for i, c in enumerate(self.cities)]
        return docs

    def answer(self, person: Person, kind: str) -> str:
        return {"birthplace": person.city, "job": person.job, "country": self.country_of(person.city)}[kind]

    def questions(self, split: str) -> list[dict]:
        """QA records (`id, question, golden_answers` plus the world's metadata) of `train` or `heldout`; ids are
        `split-person-kind`, with `-p2` after the kind for the second training phrasing."""
        rows = []
        for k, column in enumerate(self.phrasings(split)):
            for i, person in enumerate(self.people):
                for kind, hops, templates in QUESTION_KINDS:
                    rows.append({
                        "id": f"{split}-{i}-{kind}" + (f"-p{k + 1}" if k else ""),
                        "question": templates[column].format(name=person.name),
                        "golden_answers": [self.answer(person, kind)], "person": person.name, "kind": kind,
                        "hops": hops, "known": person.known,
                    })
        return rows

    def templates(self, kind_index: int) -> list[str]:
        """The phrasings in use (either split) of QUESTION_KINDS[kind_index], in their order there."""
        used = sorted(self.phrasings("train") + self.phrasings("heldout"))
        return [QUESTION_KINDS[kind_index][2][j] for j in used]

    def all_phrasings(self, person: Person) -> list[tuple[str, str, str, int]]:
        """(kind, question, answer, hops) for every question about `person`, in every phrasing in use."""
        return [(kind, template.format(name=person.name), self.answer(person, kind), hops)
                for k, (kind, hops, _) in enumerate(QUESTION_KINDS) for template in self.templates(k)]


def person_passage(person: Person) -> str:
    """A person's passage, `"Title"\\ntext` as in wiki-18."""
    return f'"{person.name}"\n{person.name} was born in {person.city}. {person.name} works as a {person.job}.'


def city_passage(city: City) -> str:
    return f'"{city.name}"\n{city.name} is a city in {city.country}.'


def name_maker(rng: random.Random, syllables: list[str] = SYLLABLES):
    """`fresh(n)`: a made-up name of n syllables drawn with `rng`, never one it returned before."""
    used: set[str] = set()

    def fresh(count: int) -> str:
        while True:
            name = "".join(rng.choice(syllables) for _ in range(count)).capitalize()
            if name not in used:
                used.add(name)
                return name

    return fresh


def generate_world(seed: int = 0, num_people: int = 48, num_cities: int = 12, num_countries: int = 4,
                   known_fraction: float = 0.5, num_practice: int = 0, train_phrasings: int = 1) -> World:
    """A deterministic world for `seed`; `known_fraction` of the people (rounded) are known; `num_practice`
    practice people (never known, never asked about) come after them, so they leave the rest of a seed's world
    as it was without them; the training split asks each question in `train_phrasings` phrasings (1 or 2), which
    changes no person, city or held-out question."""
    if num_people < 2 or num_cities < 1 or num_countries < 1 or num_practice < 0:
        raise ValueError("a world needs at least 2 people, 1 city and 1 country (and num_practice >= 0)")
    if not 1 <= train_phrasings <= len(TRAIN_PHRASINGS):
        raise ValueError(f"train_phrasings must be 1 or {len(TRAIN_PHRASINGS)}, got {train_phrasings}")
    if not 0.0 < known_fraction < 1.0:
        raise ValueError(f"known_fraction must be strictly between 0 and 1, got {known_fraction}")
    rng = random.Random(seed)
    fresh = name_maker(rng)

    countries = [fresh(3) for _ in range(num_countries)]
    cities = [City(fresh(2), countries[i % num_countries]) for i in range(num_cities)]
    num_known = round(num_people * known_fraction)
    known = set(rng.sample(range(num_people), num_known))
    people = [Person(f"{fresh(2)} {fresh(2)}", rng.choice(cities).name, rng.choice(JOBS), i in known)
              for i in range(num_people)]
    practice = [Person(f"{fresh(2)} {fresh(2)}", rng.choice(cities).name, rng.choice(JOBS), False)
                for _ in range(num_practice)]
    return World(seed=seed, people=people, cities=cities, practice=practice, train_phrasings=train_phrasings)


def write_world(world: World, out_dir: str | Path, build_bm25: bool = True) -> dict[str, Path]:
    """Write corpus.jsonl, train.jsonl, heldout.jsonl, world.json (and a BM25 index in index/) under out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"corpus": out / "corpus.jsonl", "train": out / "train.jsonl", "heldout": out / "heldout.jsonl",
             "world": out / "world.json", "index": out / "index"}
    paths["corpus"].write_text("".join(json.dumps(d) + "\n" for d in world.passages()))
    for split in SPLITS:
        paths[split].write_text("".join(json.dumps(q) + "\n" for q in world.questions(split)))
    paths["world"].write_text(json.dumps({"seed": world.seed, "people": [asdict(p) for p in world.people],
                                          "cities": [asdict(c) for c in world.cities],
                                          "practice": [asdict(p) for p in world.practice],
                                          "train_phrasings": world.train_phrasings}, indent=1))
    if build_bm25:
        from seekrl.envs.index import build_index

        build_index(paths["corpus"], paths["index"], "bm25", overwrite=True, progress=False)
    return paths


def load_world(path: str | Path) -> World:
    """A world written by `write_world` (its world.json, or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "world.json"
    data = json.loads(path.read_text())
    return World(seed=data["seed"], people=[Person(**p) for p in data["people"]],
                 cities=[City(**c) for c in data["cities"]],
                 practice=[Person(**p) for p in data.get("practice", [])],
                 train_phrasings=data.get("train_phrasings", 1))
