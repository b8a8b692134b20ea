"""Corpora: streaming readers for the two passage formats and a packed, memory-mapped document store.

Formats (jsonl or parquet):
- wiki-18 / Search-R1 / FlashRAG: `{"id", "contents"}` with contents `"Title"\\ntext`;
- `{"id", "title", "text"}` (multihop, BEIR-like), turned into the same `contents` string.

A 21M-passage corpus (wiki-18, ~14 GB) must never be held twice in memory, so nothing here builds a list of
documents: `iter_corpus` streams records, and `DocStore.build` writes the contents once into a flat UTF-8 file
plus an offsets array that the index memory-maps. Fetching a passage is a slice of the mapped file.
"""

from __future__ import annotations

import hashlib
from array import array
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PARQUET_BATCH_ROWS = 8192


class CorpusError(ValueError):
    """A corpus file that cannot be read as one of the supported formats; the message names file and line."""


def format_contents(title: str, text: str) -> str:
    """The wiki-18 `contents` string for a titled passage: the title in double quotes, a newline, the text."""
    return f'"{title}"\n{text}'


def split_contents(contents: str) -> tuple[str, str]:
    """(title, text) of a wiki-18 `contents` string; a string without a title line gives ('', contents).

    >>> split_contents('"Paris"\\nParis is the capital of France.')
    ('Paris', 'Paris is the capital of France.')
    """
    head, sep, body = contents.partition("\n")
    if sep and len(head) >= 2 and head.startswith('"') and head.endswith('"'):
        return head[1:-1], body
    return "", contents


def _record_to_doc(record: dict, where: str) -> tuple[str, str]:
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "id" not in record:
        raise CorpusError(f"{where}: record has no 'id' field (fields: {sorted(record)})")
    doc_id = str(record["id"])
    if "contents" in record and record["contents"] is not None:
        return doc_id, str(record["contents"])
    if "text" in record:
        return doc_id, format_contents(str(record.get("title") or ""), str(record["text"]))
    raise CorpusError(
        f"{where}: record needs 'contents' (wiki-18 format) or 'title' + 'text'; it has {sorted(record)}"
    )


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str]]:
    """Stream `(id, contents)` pairs from a .jsonl/.json lines or .parquet corpus, one record at a time."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such corpus file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        row = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield _record_to_doc(record, f"{path} row {row}")
        return
    with path.open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            yield _record_to_doc(record, f"{path}:{lineno}")


class PackedStrings:
    """An immutable list of strings stored as one UTF-8 file plus an int64 offsets array, both memory-mapped."""

    def __init__(self, data_path: Path, offsets_path: Path):
        self.offsets = np.load(offsets_path, mmap_mode="r")
        size = int(self.offsets[-1])
        # np.memmap cannot map an empty file; an empty store is an empty bytes object.
        self.data = np.memmap(data_path, dtype=np.uint8, mode="r") if size else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.data[start:end].tobytes().decode("utf-8")


class _PackedWriter:
    def __init__(self, data_path: Path):
        self.handle = data_path.open("wb")
        # array('q') keeps 8 bytes per document; a list of Python ints would cost ~36 (0.75 GB for wiki-18).
        self.offsets = array("q", [0])

    def add(self, value: str) -> bytes:
        raw = value.encode("utf-8")
        self.handle.write(raw)
        self.offsets.append(self.offsets[-1] + len(raw))
        return raw

    def close(self, offsets_path: Path) -> None:
        self.handle.close()
        np.save(offsets_path, np.frombuffer(self.offsets, dtype=np.int64))


class DocStore:
    """Documents `{id, contents}` by row, read from the packed files of an index directory.

    Rows are the corpus order; every index returns rows and the store turns them into documents.
    """

    FILES = ("contents.bin", "contents.offsets.npy", "ids.bin", "ids.offsets.npy", "store.json")

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.directory = directory
        self.contents = PackedStrings(directory / "contents.bin", directory / "contents.offsets.npy")
        self.ids = PackedStrings(directory / "ids.bin", directory / "ids.offsets.npy")
        self.info = json.loads((directory / "store.json").read_text())

    @property
    def sha256(self) -> str:
        """Hash of the ids and contents in order: the corpus identity used for embedding caches."""
        return self.info["sha256"]

    def __len__(self) -> int:
        return len(self.contents)

    def doc(self, row: int) -> dict:
        return {"id": self.ids[row], "contents": self.contents[row]}

    def iter_contents(self, start: int = 0, stop: int | None = None) -> Iterator[str]:
        stop = len(self) if stop is None else stop
        for row in range(start, stop):
            yield self.contents[row]

    @classmethod
    def build(cls, corpus: str | Path, directory: str | Path, progress: bool = True) -> DocStore:
        """Stream `corpus` into the packed files under `directory` (created) and open the result."""
        from tqdm.auto import tqdm

        if not Path(corpus).is_file():
            raise CorpusError(f"{corpus}: no such corpus file")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        contents = _PackedWriter(directory / "contents.bin")
        ids = _PackedWriter(directory / "ids.bin")
        digest = hashlib.sha256()
        seen_empty = 0
        for doc_id, text in tqdm(iter_corpus(corpus), desc="reading corpus", unit=" docs", disable=not progress):
            digest.update(ids.add(doc_id) + b"\x00")
            digest.update(contents.add(text) + b"\x00")
            seen_empty += not text.strip()
        contents.close(directory / "contents.offsets.npy")
        ids.close(directory / "ids.offsets.npy")
        if len(contents.offsets) == 1:
            raise CorpusError(f"{corpus}: the corpus has no documents")
        info = {"source": str(Path(corpus).resolve()), "num_docs": len(contents.offsets) - 1,
                "sha256": digest.hexdigest(), "empty_docs": seen_empty}
        (directory / "store.json").write_text(json.dumps(info, indent=2))
        return cls(directory)
