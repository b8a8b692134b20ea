"""Image knowledge base: images with titles, captions and entity text, searched by image similarity.

Glance-or-Gaze searches it with the whole image (`<glance></glance>`) or a crop (`<gaze>[x1, y1, x2, y2]</gaze>`);
a search returns the nearest entries as `{id, title, caption, score}` (cosine similarity, best first).

Encoders (the name is recorded in the index manifest, so `ImageKB.load` encodes queries the way the entries were):
- `descriptor` (the default, offline, no weights): a classical, deterministic image descriptor. Two halves with
  equal weight, each L2-normalised, concatenated and normalised again, so cosine = mean of the halves' cosines:
  (1) colour: per-channel histograms of 16 bins over all pixels, as square roots (Hellinger), which ignores layout
  and resolution; (2) layout: the image averaged down to 16x16 RGB (box filter; aspect ratio not kept), minus its
  mean. A resized copy of an image lands next to the original (cosine ~0.99); a composite of several images
  does not land next to any of them, because its layout matches none and its histogram is their mixture.
  It has no notion of semantics: it finds the same picture, not the same kind of thing.
- any CLIP-style model by Hub name or local path (`openai/clip-vit-base-patch32`, a SigLIP): loaded with
  transformers `AutoModel` + `AutoImageProcessor` (the image half of `AutoProcessor`, which needs no tokenizer),
  embeddings from `get_image_features`, L2-normalised.

Crops: a bbox in 0-1000 coordinates (relative to the image width and height, Qwen2-VL style) becomes a pixel box
by scaling, clamped to the image; a side shorter than `MIN_SIDE` = 28 px grows to 28 px around its centre
(shifted back inside the image; an image under 28 px keeps its full side). 28 px is one merged 2x2 patch of
Qwen2-VL / Qwen2.5-VL (14-px patches), the smallest crop those models can be shown, and a crop smaller than that
carries too few pixels to search with.

Cache: search results are kept in an in-memory LRU keyed by the sha256 of the query image's decoded RGB pixels
(plus its size) and topk, so re-searching the same image or crop (repeated gazes, a GRPO group of samples over
one question) costs a hash, whatever its file encoding. `ImageKB.cache_info()` counts hits and misses.

Directory layout (`seekrl retriever build --kind image --images DIR --meta FILE --out OUT`):
    manifest.json    format, kind "image", encoder config, number of entries, embedding size
    entries.jsonl    per entry: id, title, caption, text, image (path inside the index)
    embeddings.npy   [N, D] float32, L2-normalised, row i = entries.jsonl line i
    images/          the entries' image files as given (byte copies), for requests by image id
Search is an exact inner product over all rows with numpy (fine to about a million entries).

Meta file: jsonl, json list or parquet; one row per image: `id`, `title` (default: the id), `caption`, `text`
(entity text; also the caption when no caption is given), `image` (file path relative to --images; default: the
first of `<id>.jpg|.jpeg|.png|.webp|.bmp|.gif` found there).

>>> bbox_to_pixels((0, 0, 500, 500), (448, 448))
(0, 0, 224, 224)
>>> bbox_to_pixels((500, 500, 505, 505), (448, 448))  # 3 px -> 28 px around the centre
(211, 211, 239, 239)
>>> bbox_to_pixels((990, 0, 1000, 1000), (100, 50))  # 1 px wide at the right edge -> shifted inside
(72, 0, 100, 50)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seekrl.envs.index import FORMAT, IndexDirError, read_manifest

KIND = "image"
DEFAULT_ENCODER = "descriptor"
MIN_SIDE = 28
HIST_BINS = 16
GRID = 16
# Large inputs are box-averaged to this longest side before the descriptor: the same descriptor, less work.
DESCRIPTOR_MAX_SIDE = 512
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
DEFAULT_CACHE_SIZE = 4096


class ImageInputError(ValueError):
    """An image a request or a user supplied that cannot be searched; `status` is 413 (too large) or 422."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def open_rgb(data: bytes, max_pixels: int | None = None):
    """Decode image bytes into an RGB PIL image; ImageInputError (422 undecodable, 413 too many pixels)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        # The header gives the size before the pixels are decoded: refuse decompression bombs here.
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ImageInputError(f"image has {image.width}x{image.height} pixels; at most {max_pixels} are "
                                  "allowed, send a smaller image", 413)
        image.load()
        return image.convert("RGB")
    except ImageInputError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"image too large: {err}", 413) from None
    except Exception as err:  # PIL raises many types for corrupt or unsupported data
        raise ImageInputError(f"image cannot be decoded ({type(err).__name__}); send a JPEG, PNG or WebP "
                              "file") from None


def decode_base64_image(text: str, max_bytes: int | None = None, max_pixels: int | None = None):
    """A base64 string (optionally a `data:image/...;base64,` URL) -> RGB PIL image; ImageInputError otherwise."""
    if text.startswith("data:"):
        _, sep, text = text.partition(",")
        if not sep:
            raise ImageInputError("image: a data URL without ',' before the base64 payload")
    text = "".join(text.split())
    if max_bytes is not None and len(text) * 3 // 4 > max_bytes + 2:
        raise ImageInputError(f"image: about {len(text) * 3 // 4} bytes; at most {max_bytes} bytes are allowed, "
                              "send a smaller image", 413)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError("image: invalid base64") from None
    if not data:
        raise ImageInputError("image: empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageInputError(f"image: {len(data)} bytes; at most {max_bytes} bytes are allowed, send a smaller "
                              "image", 413)
    return open_rgb(data, max_pixels)


def encode_png_base64(image) -> str:
    """An image as base64 PNG (lossless, so the server searches exactly these pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def as_rgb(image):
    """A PIL image, image bytes or a file path -> RGB PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return open_rgb(bytes(image))
    with Image.open(image) as opened:
        return opened.convert("RGB")


def pixel_hash(image) -> str:
    """sha256 of an RGB image's size and pixels: equal for equal pixels, whatever file format they came in."""
    rgb = as_rgb(image)
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def check_bbox(bbox) -> tuple[int, int, int, int]:
    """A strict 0-1000 bbox (4 numbers, 0 <= x1 < x2 <= 1000, 0 <= y1 < y2 <= 1000), rounded; else ImageInputError.

    This is the API's rule (the server's 422); the agent protocol clamps model output before it gets here.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ImageInputError("bbox must be [x1, y1, x2, y2]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        raise ImageInputError("bbox must hold 4 finite numbers")
    x1, y1, x2, y2 = (round(v) for v in bbox)
    if not (0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000):
        raise ImageInputError(f"bbox {list(bbox)} out of range: need 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000 "
                              "(coordinates relative to the image, 0-1000)")
    return x1, y1, x2, y2


def _span(lo: int, hi: int, size: int, extent: int, min_side: int) -> tuple[int, int]:
    start = min(max(0, math.floor(lo * size / extent)), size)
    stop = min(max(0, math.ceil(hi * size / extent)), size)
    side = min(min_side, size)
    if stop - start < side:
        centre = (start + stop) / 2
        start = min(max(0, math.floor(centre - side / 2)), size - side)
        stop = start + side
    return start, stop


def bbox_to_pixels(bbox, size: tuple[int, int], min_side: int = MIN_SIDE, extent: int = 1000):
    """(left, top, right, bottom) pixels of a 0-`extent` bbox on an image of `size` (width, height).

    Scaled (floor at the start, ceil at the end, so a box never loses a partly covered pixel), clamped to the
    image, and each side at least `min_side` pixels (or the full side of a smaller image); see the module notes.
    """
    x1, y1, x2, y2 = bbox
    width, height = size
    left, right = _span(x1, x2, width, extent, min_side)
    top, bottom = _span(y1, y2, height, extent, min_side)
    return left, top, right, bottom


def crop(image, bbox, min_side: int = MIN_SIDE):
    """The region of a 0-1000 `bbox` of `image` as a new RGB image (see `bbox_to_pixels`)."""
    rgb = as_rgb(image)
    return rgb.crop(bbox_to_pixels(bbox, rgb.size, min_side))


class DescriptorEncoder:
    """The offline image descriptor (colour histograms + 16x16 layout; see the module notes). Deterministic."""

    name = DEFAULT_ENCODER

    def __init__(self, bins: int = HIST_BINS, grid: int = GRID, colour_weight: float = 0.5):
        if 256 % bins:
            raise ValueError(f"descriptor bins must divide 256, got {bins}")
        self.bins, self.grid, self.colour_weight = bins, grid, colour_weight

    @property
    def dim(self) -> int:
        return 3 * self.bins + 3 * self.grid * self.grid

    def config(self) -> dict:
        return {"name": self.name, "bins": self.bins, "grid": self.grid, "colour_weight": self.colour_weight}

    def _one(self, image) -> np.ndarray:
        from PIL import Image

        rgb = as_rgb(image)
        if max(rgb.size) > DESCRIPTOR_MAX_SIDE:
            scale = DESCRIPTOR_MAX_SIDE / max(rgb.size)
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                             Image.Resampling.BOX)
        pixels = np.asarray(rgb)  # [H, W, 3] uint8
        shift = 8 - int(math.log2(self.bins))
        colour = np.concatenate([np.bincount((pixels[..., c] >> shift).ravel(), minlength=self.bins)
                                 for c in range(3)]).astype(np.float64)
        colour = np.sqrt(colour / (pixels.shape[0] * pixels.shape[1]))  # each channel's part has norm 1
        small = np.asarray(rgb.resize((self.grid, self.grid), Image.Resampling.BOX), dtype=np.float64) / 255.0
        layout = (small - small.mean()).ravel()  # [grid * grid * 3]
        parts = []
        for part, weight in ((colour, self.colour_weight), (layout, 1.0 - self.colour_weight)):
            norm = np.linalg.norm(part)
            parts.append(part / norm * math.sqrt(weight) if norm > 0 else part)
        vector = np.concatenate(parts)
        norm = np.linalg.norm(vector)
        return (vector / norm if norm > 0 else vector).astype(np.float32)

    def encode(self, images: list) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(image) for image in images])  # [N, D]


class CLIPEncoder:
    """A CLIP-style model (anything with `get_image_features`) by Hub name or local path, through transformers."""

    def __init__(self, name: str, batch_size: int = 32, device: str | None = None):
        self.name = name
        self.batch_size = batch_size
        self.device = device or "cpu"
        self._model = self._processor = None

    def _load(self):
        if self._model is None:
            from transformers import AutoImageProcessor, AutoModel

            try:
                self._processor = AutoImageProcessor.from_pretrained(self.name)
                self._model = AutoModel.from_pretrained(self.name).to(self.device).eval()
            except OSError as err:
                raise ValueError(f"cannot load image encoder {self.name!r}: {err}. Offline, pass a local path or "
                                 f"use --encoder {DEFAULT_ENCODER}") from None
            if not hasattr(self._model, "get_image_features"):
                raise ValueError(f"image encoder {self.name!r} ({type(self._model).__name__}) has no "
                                 "get_image_features; use a CLIP-style model")
        return self._model, self._processor

    def config(self) -> dict:
        return {"name": self.name, "batch_size": self.batch_size}

    def encode(self, images: list) -> np.ndarray:
        import torch

        model, processor = self._load()
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [as_rgb(image) for image in images[start:start + self.batch_size]]
            inputs = processor(images=batch, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = model.get_image_features(pixel_values=inputs["pixel_values"])
            # transformers 5 returns a model output whose pooler_output is the projected embedding.
            features = out if isinstance(out, torch.Tensor) else out.pooler_output  # [B, D]
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        if not chunks:
            return np.zeros((0, int(model.config.projection_dim)), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def make_encoder(config: dict | str | None = None, batch_size: int = 32):
    """The encoder for a name (`descriptor`, a Hub name, a path) or a manifest's encoder config."""
    if config is None or isinstance(config, str):
        config = {"name": config or DEFAULT_ENCODER}
    config = dict(config)
    name = config.pop("name")
    if name == DEFAULT_ENCODER:
        return DescriptorEncoder(**config)
    config.setdefault("batch_size", batch_size)
    return CLIPEncoder(name, **config)


@dataclass(frozen=True)
class Entry:
    """One knowledge-base entry. `image`: its file, relative to the index directory once saved."""

    id: str
    title: str
    caption: str
    text: str
    image: str


def read_meta(path: str | Path) -> list[dict]:
    """Rows of a meta file (.jsonl, .json list or .parquet); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise IndexDirError(f"--meta {path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise IndexDirError(f"{path}: expected a JSON list of entries")
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise IndexDirError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from None
    return rows


def _entries_from_meta(images_dir: Path, rows: list[dict], where: str) -> list[Entry]:
    entries, seen = [], set()
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or row.get("id") in (None, ""):
            raise IndexDirError(f"{where}: entry {i} has no 'id'")
        entry_id = str(row["id"])
        if entry_id in seen:
            raise IndexDirError(f"{where}: entry {i}: duplicate id {entry_id!r}")
        seen.add(entry_id)
        if row.get("image"):
            image = images_dir / str(row["image"])
        else:
            found = [images_dir / f"{entry_id}{ext}" for ext in IMAGE_EXTENSIONS
                     if (images_dir / f"{entry_id}{ext}").is_file()]
            image = found[0] if found else images_dir / f"{entry_id}.jpg"
        if not image.is_file():
            raise IndexDirError(f"{where}: entry {i} ({entry_id}): image {image} not found")
        text = str(row.get("text") or "")
        entries.append(Entry(id=entry_id, title=str(row.get("title") or entry_id),
                             caption=str(row.get("caption") or text), text=text, image=str(image)))
    if not entries:
        raise IndexDirError(f"{where}: no entries")
    return entries


class ImageKB:
    """Entries plus their embeddings [N, D] and the encoder that made them. `search` returns, per query image,
    the `topk` nearest entries as `{id, title, caption, score}`, best first (ties: the earlier entry first)."""

    kind = KIND

    def __init__(self, entries: list[Entry], embeddings: np.ndarray, encoder, root: Path | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE):
        if len(entries) != len(embeddings):
            raise ValueError(f"{len(entries)} entries but {len(embeddings)} embeddings")
        self.entries = entries
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # [N, D]
        self.encoder = encoder
        self.root = root
        self.by_id = {entry.id: i for i, entry in enumerate(entries)}
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], list[dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def build(cls, images_dir: str | Path, meta: str | Path | list[dict], encoder: str | dict | None = None,
              batch_size: int = 32) -> ImageKB:
        """Read the meta rows and their images from `images_dir`, encode them all, and return the KB."""
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise IndexDirError(f"--images {images_dir}: no such directory")
        where = str(meta) if not isinstance(meta, list) else "meta"
        rows = read_meta(meta) if not isinstance(meta, list) else meta
        entries = _entries_from_meta(images_dir, rows, where)
        model = make_encoder(encoder, batch_size=batch_size)
        images = []
        for entry in entries:
            try:
                images.append(open_rgb(Path(entry.image).read_bytes()))
            except ImageInputError as err:
                raise IndexDirError(f"{entry.image}: {err}") from None
        embeddings = np.concatenate([model.encode(images[s:s + 256]) for s in range(0, len(images), 256)])
        return cls(entries, embeddings, model)

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write the index directory (layout in the module notes); images are copied into it."""
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise IndexDirError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
            if not (out / "manifest.json").exists():
                raise IndexDirError(f"{out} is not empty and holds no seekrl index; refusing to delete it")
            shutil.rmtree(out)
        (out / "images").mkdir(parents=True, exist_ok=True)
        saved = []
        for row, entry in enumerate(self.entries):
            source = self.image_path(row)
            target = Path("images") / f"{row:06d}{source.suffix.lower()}"
            shutil.copyfile(source, out / target)
            saved.append(Entry(entry.id, entry.title, entry.caption, entry.text, str(target)))
        (out / "entries.jsonl").write_text("".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in saved),
                                           encoding="utf-8")
        np.save(out / "embeddings.npy", self.embeddings)
        manifest = {"format": FORMAT, "kind": KIND, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "image": {"encoder": self.encoder.config(), "num_entries": len(self.entries),
                              "dim": int(self.embeddings.shape[1]), "min_side": MIN_SIDE}}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        self.entries, self.root = saved, out
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ImageKB:
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest.get("kind") != KIND:
            raise IndexDirError(f"{directory} is a {manifest.get('kind')} index, not an image index; build one "
                                "with `seekrl retriever build --kind image`")
        lines = (directory / "entries.jsonl").read_text(encoding="utf-8").splitlines()
        entries = [Entry(**json.loads(line)) for line in lines if line.strip()]
        embeddings = np.load(directory / "embeddings.npy")
        return cls(entries, embeddings, make_encoder(manifest["image"]["encoder"]), root=directory)

    def image_path(self, row: int) -> Path:
        path = Path(self.entries[row].image)
        return path if path.is_absolute() or self.root is None else self.root / path

    def image(self, entry_id: str):
        """The RGB image of an entry, by id; KeyError for an unknown id."""
        return as_rgb(self.image_path(self.by_id[entry_id]))

    def cache_info(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._cache), "max_size": self.cache_size}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self.hits = self.misses = 0

    def search(self, images: list, topk: int) -> list[list[dict]]:
        """Per query image (PIL, bytes or path), the `topk` nearest entries `{id, title, caption, score}`."""
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        rgb = [as_rgb(image) for image in images]
        keys = [(pixel_hash(image), topk) for image in rgb]
        results: list[list[dict] | None] = [None] * len(rgb)
        with self._lock:
            for i, key in enumerate(keys):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[i] = self._cache[key]
                    self.hits += 1
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            vectors = self.encoder.encode([rgb[i] for i in todo])  # [Q, D]
            k = min(topk, len(self.entries))
            for i, vector in zip(todo, vectors):
                # One matrix-vector product per query: the scores of an image never depend on its batch.
                row_scores = self.embeddings @ vector  # [N]
                # Stable sort on -score: equal scores keep entry order, so results are reproducible.
                order = np.argsort(-row_scores, kind="stable")[:k]
                results[i] = [{"id": self.entries[r].id, "title": self.entries[r].title,
                               "caption": self.entries[r].caption, "score": float(row_scores[r])} for r in order]
            with self._lock:
                for i in todo:
                    self.misses += 1
                    self._cache[keys[i]] = results[i]
                    self._cache.move_to_end(keys[i])
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [[dict(item) for item in result] for result in results]


def build_image_index(images_dir: str | Path, meta: str | Path | list[dict], out: str | Path,
                      encoder: str | None = None, batch_size: int = 32, overwrite: bool = False) -> ImageKB:
    """Build an image KB from `images_dir` + `meta` into `out` and return it loaded from there."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise IndexDirError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    kb = ImageKB.build(images_dir, meta, encoder, batch_size=batch_size)
    kb.save(out, overwrite=overwrite)
    return kb
