"""A composite-image knowledge world for the offline Glance-or-Gaze quickstart (the multimodal sibling of
seekrl.envs.world), and the image knowledge base of the real images in ../shared/data/multimodal.

The world, for a seed:
- a knowledge base over real images (by default the 75 of ../shared/data/multimodal: 5 InfoSeek, 20 OK-VQA
  COCO photos, 50 easy-VQA shapes). Each image is given a made-up entity, a name and the place it was "first
  recorded in", so nothing a model knows answers a question: only the KB entry does. Entry: title = the name,
  caption = "Name, first recorded in Place.";
- composites: 2x2 grids of four distinct KB images, each stretched to `tile` x `tile` pixels (aspect ratio not
  kept, no border), so tile i covers exactly the 0-1000 box `TILE_BOXES[i]`: top-left [0, 0, 500, 500],
  top-right [500, 0, 1000, 500], bottom-left [0, 500, 500, 1000], bottom-right [500, 500, 1000, 1000];
- questions about one tile ("What is the name of the thing in the top-left quarter of the picture?"), answered
  by that tile's KB entry. With the offline descriptor (seekrl.envs.image_kb), a gaze at the tile's box
  retrieves that entry top-1, while a glance (the whole composite) matches none of the four well; a glance
  can rank at most one of the four tiles first, so at most a quarter of a composite's questions are answerable
  from a glance;
- splits: the KB images are split (seeded) into a training pool and a held-out pool, and the composites of
  each split use only their pool, so held-out questions are about images the policy never saw in training.
  Held-out questions also use a second phrasing (as in seekrl.envs.world).

`write_image_world` writes the KB (images + meta.jsonl), its index, the composites and the question files, in
the layout `seekrl.data.load_qa` reads (`golden_answers` rows with an `image_id` beside an `images/` folder).

>>> world = generate_image_world(seed=0, source=[SourceImage(f"s{i}", _demo_png(i), ".png", "demo")
...                                               for i in range(16)], num_train=3, num_heldout=1)
>>> len(world.composites), len(world.questions("train")), world.questions("train")[0]["tile"]
(4, 24, 'top-left')
>>> world.composite_image(world.composites[0]).size
(224, 224)
"""

from __future__ import annotations

import io
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from seekrl.envs.world import name_maker
TILE_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")
TILE_BOXES = ((0, 0, 500, 500), (500, 0, 1000, 500), (0, 500, 500, 1000), (500, 500, 1000, 1000))
DEFAULT_TILE = 112

# (kind, phrasing A (train), phrasing B (held-out), more phrasings for the reading drills only)
QUESTION_KINDS = [
    ("name", "What is the name of the thing in the {tile} quarter of the picture?",
     "What is the thing shown in the {tile} part of the image called?",
     ("Name the thing you see in the {tile} quarter.", "Which thing does the {tile} corner of the picture show?",
      "Tell me what the thing at the {tile} of this picture is named.")),
    ("origin", "Where was the thing in the {tile} quarter of the picture first recorded?",
     "In which place was the thing shown in the {tile} part of the image first recorded?",
     ("Name the place that first recorded the thing in the {tile} quarter.",
      "Which place first recorded the thing the {tile} corner of the picture shows?",
      "Tell me where the thing at the {tile} of this picture was first recorded.")),
]
SPLITS = {"train": 1, "heldout": 2}


@dataclass(frozen=True)
class SourceImage:
    """A real image and what its dataset says about it (title/caption/text: the real-data KB entry)."""

    id: str
    data: bytes
    suffix: str
    dataset: str
    title: str = ""
    caption: str = ""
    text: str = ""


@dataclass(frozen=True)
class Thing:
    """The made-up entity a world gives one KB image."""

    kb_id: str
    name: str
    place: str
    split: str

    @property
    def caption(self) -> str:
        return f"{self.name}, first recorded in {self.place}."


@dataclass(frozen=True)
class Composite:
    id: str
    split: str
    tiles: tuple[str, str, str, str]  # kb ids in TILE_NAMES order


def _easy_vqa_captions(rows: list) -> dict[str, str]:
    """'a red triangle' per easy-VQA image, from its own questions and answers."""
    shapes, colours = {}, {}
    for question, answer, image_id in rows:
        key = str(image_id)
        if re.fullmatch(r"what shape (does the image contain|is in the image|is present)\?", question):
            shapes[key] = answer
        elif m := re.fullmatch(r"what is the (\w+) shape\?", question):
            colours[key], shapes[key] = m.group(1), answer
        elif m := re.fullmatch(r"what (?:is the color of|color is) the (\w+)\?", question):
            colours[key] = answer
            if m.group(1) != "shape":
                shapes[key] = m.group(1)
    return {key: " ".join(["a", colours.get(key, ""), shapes.get(key, "shape")]).replace("  ", " ")
            for key in set(shapes) | set(colours)}


def shared_images(data_dir: str | Path) -> list[SourceImage]:
    """The real images of ../shared/data/multimodal with the text their datasets give (see MANIFEST.md).

    None of the three datasets has titles or captions, so the entry text is built from what each row says:
    InfoSeek: the question and its answers (the answer names the entity's property, not the entity);
    OK-VQA: the question and the most common annotator answer; easy-VQA: 'a <colour> <shape>' from its questions.
    """
    import pyarrow.parquet as pq

    root = Path(data_dir) / "multimodal"
    images: list[SourceImage] = []
    for i, row in enumerate(pq.read_table(root / "infoseek_mini_5.parquet").to_pylist()):
        question = str(row["prompt"][-1]["content"]).replace("<image>", "").strip()
        answers = json.loads(row["reward_model"]["candidate_answers"])
        truth = row["reward_model"]["ground_truth"]
        images.append(SourceImage(f"infoseek-{i}", bytes(row["images"][0]["bytes"]), ".jpg", "infoseek",
                                  title=f"InfoSeek image {i}", caption=f"{question} {truth}.",
                                  text=f"{question} {truth} (also: {', '.join(a for a in answers if a != truth)})."))
    for line in (root / "okvqa_20" / "dev.jsonl").read_text().splitlines():
        row = json.loads(line)
        answers = row["golden_answers"]
        common = max(dict.fromkeys(answers), key=answers.count)
        path = root / "okvqa_20" / "images" / f"{row['image_id']}.jpg"
        images.append(SourceImage(f"okvqa-{row['image_id']}", path.read_bytes(), ".jpg", "okvqa",
                                  title=f"COCO image {row['image_id']}", caption=f"{row['question']} {common}.",
                                  text=f"{row['question']} Annotators: {', '.join(answers)}."))
    easy = root / "easy_vqa"
    captions = _easy_vqa_captions(json.loads((easy / "test_questions_img0-49.json").read_text()))
    for path in sorted((easy / "images").glob("*.png"), key=lambda p: int(p.stem)):
        caption = captions.get(path.stem, "a shape")
        images.append(SourceImage(f"easyvqa-{path.stem}", path.read_bytes(), ".png", "easy_vqa",
                                  title=f"easy-VQA image {path.stem}", caption=caption + ".",
                                  text=f"A synthetic image of {caption} on a white background."))
    return images


def write_kb_files(images: list[SourceImage], out_dir: str | Path, meta: list[dict] | None = None) -> tuple[Path, Path]:
    """Write `images/` and `meta.jsonl` (the input of `seekrl retriever build --kind image`); returns both paths.

    `meta` replaces the images' own title/caption/text (one row per image, same order) when given.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        name = f"{image.id}{image.suffix}"
        (out / "images" / name).write_bytes(image.data)
        row = meta[i] if meta is not None else {"title": image.title, "caption": image.caption, "text": image.text}
        rows.append({"id": image.id, "image": name, **row, "dataset": image.dataset})
    (out / "meta.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out / "images", out / "meta.jsonl"


class ImageWorld:
    """A generated world: its things (one per KB image), composites, and the source images they are drawn from."""

    def __init__(self, seed: int, tile: int, things: list[Thing], composites: list[Composite],
                 source: dict[str, SourceImage]):
        self.seed, self.tile, self.things, self.composites, self.source = seed, tile, things, composites, source
        self.thing = {t.kb_id: t for t in things}

    def kb_meta(self) -> list[dict]:
        """One meta row per thing, in `things` order: the world's KB entries."""
        return [{"title": t.name, "caption": t.caption,
                 "text": f"{t.caption} The picture comes from {self.source[t.kb_id].dataset}."} for t in self.things]

    def composite_image(self, composite: Composite):
        """The 2x2 composite as an RGB image of 2*tile x 2*tile pixels (deterministic)."""
        from PIL import Image

        from seekrl.envs.image_kb import open_rgb

        canvas = Image.new("RGB", (2 * self.tile, 2 * self.tile))
        for i, kb_id in enumerate(composite.tiles):
            tile = open_rgb(self.source[kb_id].data).resize((self.tile, self.tile), Image.Resampling.LANCZOS)
            canvas.paste(tile, ((i % 2) * self.tile, (i // 2) * self.tile))
        return canvas

    def answer(self, thing: Thing, kind: str) -> str:
        return {"name": thing.name, "origin": thing.place}[kind]

    def reading_drills(self, count: int, seed: int = 0) -> list[dict]:
        """`count` reading drills: questions about one tile of a *training* composite whose knowledge-base entry is
        made up for the drill, so the answer can only be read from the observation, never recalled from the image.

        Each drill is a question row as `questions("train")` gives (`image_id` a training composite, `tile`,
        `bbox`) whose `entry` is the made-up entry (`title`, `caption`) a gaze at the tile retrieves, and whose
        gold answer comes from that entry. It is asked in the training phrasing or in one of three more (never the
        held-out one), so that the drills teach the words that matter (the tile, name or place), not one
        sentence. Names and places are drawn from the world's own inventory (every thing's name, training or
        held-out, and every place), none tied to its image: every name the policy will ever have to copy out of an
        observation is made of tokens it has learnt to write (the world's tokenizer makes a name or a place a few
        tokens), while no drill says which image a name belongs to.

        >>> world = generate_image_world(seed=0, source=[SourceImage(f"s{i}", _demo_png(i), ".png", "demo")
        ...                                               for i in range(16)], num_train=3, num_heldout=1)
        >>> drill = world.reading_drills(1)[0]
        >>> drill["image_id"].startswith("train-"), drill["golds"][0] in drill["entry"]["caption"]
        (True, True)
        """
        rng = random.Random(seed)
        composites = [c for c in self.composites if c.split == "train"]
        if not composites:
            raise ValueError("the world has no training composites to drill on")
        names = sorted({t.name for t in self.things})
        places = sorted({t.place for t in self.things})
        drills = []
        for n in range(count):
            composite, tile = rng.choice(composites), rng.randrange(len(TILE_NAMES))
            kind = rng.choice(QUESTION_KINDS)
            thing = Thing(f"drill-{n}", rng.choice(names), rng.choice(places), "train")
            phrasing = rng.choice((kind[SPLITS["train"]], *kind[3]))  # never the held-out phrasing
            drills.append({"id": f"drill-{n:05d}", "question": phrasing.format(tile=TILE_NAMES[tile]),
                           "golds": [self.answer(thing, kind[0])], "image_id": composite.id,
                           "tile": TILE_NAMES[tile], "bbox": list(TILE_BOXES[tile]), "kind": kind[0],
                           "entry": {"title": thing.name, "caption": thing.caption}})
        return drills

    def questions(self, split: str) -> list[dict]:
        """QA rows of `train` or `heldout`: `id, question, golden_answers, image_id` (the composite) plus `tile`,
        `bbox` (the tile's 0-1000 box: the right gaze), `kb_id` (the entry holding the answer) and `kind`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        rows = []
        for composite in (c for c in self.composites if c.split == split):
            for i, kb_id in enumerate(composite.tiles):
                thing = self.thing[kb_id]
                for kind in QUESTION_KINDS:
                    rows.append({"id": f"{composite.id}-{i}-{kind[0]}",
                                 "question": kind[SPLITS[split]].format(tile=TILE_NAMES[i]),
                                 "golden_answers": [self.answer(thing, kind[0])], "image_id": composite.id,
                                 "tile": TILE_NAMES[i], "bbox": list(TILE_BOXES[i]), "kb_id": kb_id,
                                 "kind": kind[0]})
        return rows


def generate_image_world(seed: int = 0, source: list[SourceImage] | None = None, data_dir: str | Path | None = None,
                         num_train: int = 32, num_heldout: int = 8, tile: int = DEFAULT_TILE,
                         heldout_fraction: float = 0.25) -> ImageWorld:
    """A deterministic world for `seed` over `source` images (default: `shared_images(data_dir)`)."""
    if source is None:
        if data_dir is None:
            raise ValueError("give the source images or data_dir (the shared/data folder)")
        source = shared_images(data_dir)
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be strictly between 0 and 1, got {heldout_fraction}")
    num_heldout_images = round(len(source) * heldout_fraction)
    if min(num_heldout_images, len(source) - num_heldout_images) < 4:
        raise ValueError(f"{len(source)} images with heldout_fraction {heldout_fraction} leave fewer than 4 "
                         "images in a split; a composite needs 4")
    if tile < 28:
        raise ValueError(f"tile must be at least 28 pixels (the smallest gaze), got {tile}")
    rng = random.Random(seed)
    fresh = name_maker(rng)

    places = [fresh(3) for _ in range(max(4, len(source) // 6))]
    heldout = set(rng.sample(range(len(source)), num_heldout_images))
    things = [Thing(image.id, fresh(2), rng.choice(places), "heldout" if i in heldout else "train")
              for i, image in enumerate(source)]
    composites = []
    for split, count in (("train", num_train), ("heldout", num_heldout)):
        pool = [t.kb_id for t in things if t.split == split]
        for n in range(count):
            composites.append(Composite(f"{split}-{n:03d}", split, tuple(rng.sample(pool, 4))))
    return ImageWorld(seed, tile, things, composites, {image.id: image for image in source})


def write_image_world(world: ImageWorld, out_dir: str | Path, build_index: bool = True,
                      encoder: str | None = None) -> dict[str, Path]:
    """Write kb/ (images + meta.jsonl), index/ (the image KB, offline descriptor unless `encoder`),
    images/<composite>.png, train.jsonl, heldout.jsonl and world.json under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"kb": out / "kb", "index": out / "index", "images": out / "images", "train": out / "train.jsonl",
             "heldout": out / "heldout.jsonl", "world": out / "world.json"}
    kb_images, meta = write_kb_files([world.source[t.kb_id] for t in world.things], paths["kb"], world.kb_meta())
    paths["images"].mkdir(exist_ok=True)
    for composite in world.composites:
        world.composite_image(composite).save(paths["images"] / f"{composite.id}.png")
    for split in SPLITS:
        paths[split].write_text("".join(json.dumps(q) + "\n" for q in world.questions(split)))
    paths["world"].write_text(json.dumps({
        "seed": world.seed, "tile": world.tile, "things": [asdict(t) for t in world.things],
        "composites": [asdict(c) for c in world.composites],
        "sources": {t.kb_id: {"suffix": world.source[t.kb_id].suffix, "dataset": world.source[t.kb_id].dataset}
                    for t in world.things}}, indent=1))
    if build_index:
        from seekrl.envs.image_kb import build_image_index

        build_image_index(kb_images, meta, paths["index"], encoder=encoder, overwrite=True)
    return paths


def load_image_world(path: str | Path) -> ImageWorld:
    """A world written by `write_image_world` (its directory); source images are read from kb/images."""
    root = Path(path)
    data = json.loads((root / "world.json").read_text())
    source = {kb_id: SourceImage(kb_id, (root / "kb" / "images" / f"{kb_id}{info['suffix']}").read_bytes(),
                                 info["suffix"], info["dataset"]) for kb_id, info in data["sources"].items()}
    things = [Thing(**t) for t in data["things"]]
    composites = [Composite(c["id"], c["split"], tuple(c["tiles"])) for c in data["composites"]]
    return ImageWorld(data["seed"], data["tile"], things, composites, source)


def _demo_png(i: int) -> bytes:
    """A 64x64 test image, distinct per i (doctests)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), ((37 * i) % 256, (91 * i) % 256, (53 * i + 100) % 256))
    ImageDraw.Draw(image).rectangle((4 * (i % 8), 4 * (i % 5), 30 + 3 * i, 40), fill=(250 - 20 * i, 30, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
