"""QA data loading: every supported layout becomes one record type, `QARecord`.

Sources:
  - a Hugging Face dataset id, through `datasets.load_dataset` (`RUC-NLPIR/FlashRAG_datasets` with a config
    such as `nq`, `PeterJinGo/nq_hotpotqa_train`, `lmms-lab/FVQA`), or a local dataset directory through the
    very same call;
  - a local file: FlashRAG jsonl (`golden_answers`), HotpotQA / 2WikiMultihopQA official (`_id, context,
    supporting_facts, answer`), MuSiQue (`paragraphs, question_decomposition`), the veRL/Search-R1 parquet
    (`prompt, reward_model.ground_truth` joined by `<|answer_split|>`), NQ-open (`question, answer[list]`),
    Bamboogle (`idx, question, answer`), the MMSearch-R1/FVQA parquet (embedded JPEG bytes), OK-VQA jsonl with
    an image folder, and easy-VQA (`[question, answer, image_id]` triples with an image folder).

The layout is recognised per row from its fields, so a Hub dataset and the same rows in a local file give the
same records. In Natural Questions rows, gold answers longer than `max_answer_chars` (NQ's long-answer
passages, which FlashRAG keeps beside the short answers) are dropped and counted; an NQ record left with no
short answer is skipped and counted. A missing field or an unreadable file raises `DataError`
naming the file, the row and the field.

>>> rec = row_to_record({"id": "q1", "question": "Capital of France?", "golden_answers": ["Paris"]}, 0, "<doc>")
>>> rec.id, rec.answers, rec.metadata["layout"]
('q1', ['Paris'], 'flashrag')
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

ANSWER_SPLIT = "<|answer_split|>"

# FlashRAG's benchmark configs, by the names users type (and the aliases the papers use).
FLASHRAG_ID = "RUC-NLPIR/FlashRAG_datasets"
FLASHRAG_CONFIGS = {
    "nq": "nq",
    "triviaqa": "triviaqa",
    "tq": "triviaqa",
    "popqa": "popqa",
    "hotpotqa": "hotpotqa",
    "2wikimultihopqa": "2wikimultihopqa",
    "2wiki": "2wikimultihopqa",
    "musique": "musique",
    "bamboogle": "bamboogle",
}

# The split a benchmark is reported on: test if the dataset has one, else dev/validation, else train.
SPLIT_PREFERENCE = ("test", "dev", "validation", "train")


class DataError(ValueError):
    """Bad data a user supplied: names the file, the row and the field."""


@dataclass
class QARecord:
    """One question with its gold answers.

    `images` holds encoded image bytes or image file paths (open them with `open_image`), so records stay
    cheap to pickle across Ray workers. `metadata` keeps everything else a layout carries (dataset, split,
    supporting facts, gold document ids, context paragraphs, ...) plus `layout` and `source`.
    """

    id: str
    question: str
    answers: list[str]
    images: list[bytes | str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadResult:
    """Records of one source plus what was filtered out of it."""

    records: list[QARecord]
    source: str
    dropped_answers: int = 0
    dropped_records: int = 0


def open_image(ref: bytes | str | os.PathLike):
    """Open an image reference of a `QARecord` as an RGB `PIL.Image`."""
    from PIL import Image

    if isinstance(ref, (bytes, bytearray)):
        return Image.open(io.BytesIO(ref)).convert("RGB")
    return Image.open(ref).convert("RGB")


def _need(row: dict, key: str, index: int, source: str):
    if key not in row or row[key] is None:
        raise DataError(f"{source}: row {index}: missing field '{key}' (fields present: {sorted(row)})")
    return row[key]


def _as_list(value) -> list:
    """Lists arrive as lists, numpy arrays (parquet) or their Python repr (some CSV/parquet exports)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except json.JSONDecodeError:
                return list(ast.literal_eval(text))
        return [value]
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return list(value)


def _answers(values: Iterable, index: int, source: str, key: str) -> list[str]:
    answers: list[str] = []
    for v in values:
        if v is None:
            continue
        s = str(v).strip()
        if s and s not in answers:
            answers.append(s)
    if not answers:
        raise DataError(f"{source}: row {index}: field '{key}' has no answer")
    return answers


def _question_from_prompt(prompt, index: int, source: str) -> str:
    """The question inside a veRL-style chat prompt: the last user message, after its last 'Question:'."""
    messages = _as_list(prompt)
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise DataError(f"{source}: row {index}: field 'prompt' has no user message")
    content = users[-1].get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    content = str(content or "")
    if "Question:" in content:
        content = content.rsplit("Question:", 1)[1]
    content = content.replace("<image>", "").strip()
    if not content:
        raise DataError(f"{source}: row {index}: field 'prompt' has an empty question")
    return content


def _ground_truth_answers(reward_model, index: int, source: str) -> tuple[list[str], dict]:
    """Gold answers of a veRL `reward_model` cell: a `<|answer_split|>` string, a list, or {"target": [...]}."""
    if isinstance(reward_model, str):
        reward_model = ast.literal_eval(reward_model)
    if not isinstance(reward_model, dict):
        raise DataError(f"{source}: row {index}: field 'reward_model' must be a mapping")
    truth = reward_model.get("ground_truth")
    if truth is None:
        raise DataError(f"{source}: row {index}: missing field 'reward_model.ground_truth'")
    if isinstance(truth, dict):
        truth = truth.get("target", truth.get("answer"))
    values = truth.split(ANSWER_SPLIT) if isinstance(truth, str) else _as_list(truth)
    candidates = _as_list(reward_model.get("candidate_answers"))
    return _answers(list(values) + candidates, index, source, "reward_model.ground_truth"), reward_model


def _image_refs(cell, index: int, source: str) -> list[bytes | str]:
    refs: list[bytes | str] = []
    for item in _as_list(cell):
        if isinstance(item, dict):
            if item.get("bytes"):
                refs.append(bytes(item["bytes"]))
            elif item.get("path"):
                refs.append(str(item["path"]))
            else:
                raise DataError(f"{source}: row {index}: an entry of field 'images' has neither bytes nor path")
        elif isinstance(item, (bytes, bytearray)):
            refs.append(bytes(item))
        elif hasattr(item, "save"):
            buf = io.BytesIO()
            item.save(buf, format="PNG")
            refs.append(buf.getvalue())
        else:
            refs.append(str(item))
    return refs


def _image_path(images_dir: Path | None, image_id, index: int, source: str) -> str:
    if images_dir is None:
        raise DataError(f"{source}: row {index}: rows reference images by id; give images_dir")
    for ext in (".jpg", ".jpeg", ".png"):
        candidate = images_dir / f"{image_id}{ext}"
        if candidate.exists():
            return str(candidate)
    raise DataError(f"{source}: row {index}: image '{image_id}' not found in {images_dir}")


def row_to_record(row: Any, index: int, source: str, images_dir: str | os.PathLike | None = None) -> QARecord:
    """Convert one row of any supported layout into a `QARecord` (layout recognised from the fields)."""
    images_path = Path(images_dir) if images_dir else None
    if isinstance(row, (list, tuple)):
        # easy-VQA: [question, answer, image_id]
        if len(row) != 3:
            raise DataError(f"{source}: row {index}: expected [question, answer, image_id], got {row!r}")
        question, answer, image_id = row
        return QARecord(
            id=f"easyvqa-{index}",
            question=str(question),
            answers=_answers([answer], index, source, "answer"),
            images=[_image_path(images_path, image_id, index, source)],
            metadata={"layout": "easy_vqa", "image_id": image_id},
        )
    if not isinstance(row, dict):
        raise DataError(f"{source}: row {index}: expected a JSON object, got {type(row).__name__}")

    if "reward_model" in row and "prompt" in row:
        answers, reward_model = _ground_truth_answers(row["reward_model"], index, source)
        question = row.get("question") or _question_from_prompt(row["prompt"], index, source)
        extra = row.get("extra_info") or {}
        if isinstance(extra, str):
            extra = ast.literal_eval(extra)
        images = _image_refs(row.get("images"), index, source) if "images" in row else []
        rid = row.get("id") or extra.get("index") or f"{Path(source).stem}-{index}"
        return QARecord(
            id=str(rid),
            question=str(question),
            answers=answers,
            images=images,
            metadata={
                "layout": "mmsearch" if images else "searchr1",
                "data_source": row.get("data_source"),
                "ground_truth": reward_model.get("ground_truth") if images else None,
                "split": extra.get("split"),
            },
        )
    if "paragraphs" in row and "question_decomposition" in row:
        answers = _answers([_need(row, "answer", index, source)] + _as_list(row.get("answer_aliases")),
                           index, source, "answer")
        return QARecord(
            id=str(_need(row, "id", index, source)),
            question=str(_need(row, "question", index, source)),
            answers=answers,
            metadata={
                "layout": "musique",
                "dataset": "musique",
                "answerable": row.get("answerable"),
                "question_decomposition": row["question_decomposition"],
                "paragraphs": row["paragraphs"],
            },
        )
    if "_id" in row and "context" in row:
        is_2wiki = "evidences" in row
        return QARecord(
            id=str(row["_id"]),
            question=str(_need(row, "question", index, source)),
            answers=_answers([_need(row, "answer", index, source)], index, source, "answer"),
            metadata={
                "layout": "2wiki" if is_2wiki else "hotpotqa",
                "dataset": "2wikimultihopqa" if is_2wiki else "hotpotqa",
                "type": row.get("type"),
                "level": row.get("level"),
                "supporting_facts": row.get("supporting_facts"),
                "context": row["context"],
                "evidences": row.get("evidences"),
            },
        )
    if "golden_answers" in row:
        golds = _as_list(row["golden_answers"])
        meta = {k: v for k, v in row.items() if k not in ("id", "question", "golden_answers", "image_id", "images")}
        images: list[bytes | str] = []
        if "image_id" in row:
            images = [_image_path(images_path, row["image_id"], index, source)]
            meta["annotator_answers"] = [str(g) for g in golds]
            meta["image_id"] = row["image_id"]
        elif row.get("images") is not None:
            images = _image_refs(row["images"], index, source)
        meta["layout"] = "okvqa" if "image_id" in row else "flashrag"
        return QARecord(
            id=str(row.get("id") or f"{Path(source).stem}-{index}"),
            question=str(_need(row, "question", index, source)),
            answers=_answers(golds, index, source, "golden_answers"),
            images=images,
            metadata=meta,
        )
    if "answer" in row:
        answer = row["answer"]
        question = str(_need(row, "question", index, source))
        if isinstance(answer, str):
            rid = row.get("id", row.get("idx"))
            return QARecord(
                id=str(rid if rid is not None else f"{Path(source).stem}-{index}"),
                question=question,
                answers=_answers([answer], index, source, "answer"),
                metadata={"layout": "bamboogle" if "idx" in row else "question_answer"},
            )
        return QARecord(
            id=str(row.get("id") or f"{Path(source).stem}-{index}"),
            question=question,
            answers=_answers(_as_list(answer), index, source, "answer"),
            metadata={"layout": "nq_open"},
        )
    raise DataError(
        f"{source}: row {index}: unrecognised layout (fields {sorted(row)}); expected one of: golden_answers, "
        "answer, reward_model+prompt, _id+context (HotpotQA/2Wiki), paragraphs+question_decomposition (MuSiQue)"
    )


def _read_rows(path: Path) -> Iterable[Any]:
    """Rows of a local jsonl / json / parquet file; JSON errors name the line."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from None
        elif suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
            yield from data
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as err:  # pyarrow raises several types for corrupt files
                raise DataError(f"{path}: unreadable parquet file ({err})") from None
            yield from table.to_pylist()
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; use .jsonl, .json or .parquet")
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _default_images_dir(path: Path) -> Path | None:
    images = path.parent / "images"
    return images if images.is_dir() else None


def _pick_split(available: Iterable[str], requested: str | None, source: str) -> str:
    available = list(available)
    if requested is not None:
        if requested not in available:
            raise DataError(f"{source}: no split '{requested}'; available: {available}")
        return requested
    for name in SPLIT_PREFERENCE:
        if name in available:
            return name
    return available[0]


def _hub_rows(path: str, name: str | None, split: str | None) -> tuple[Iterable[dict], str]:
    """Rows of a Hugging Face dataset id or local dataset directory through `datasets.load_dataset`."""
    import datasets

    if path.lower() in FLASHRAG_CONFIGS and name is None:
        path, name = FLASHRAG_ID, FLASHRAG_CONFIGS[path.lower()]
    source = f"{path}" + (f":{name}" if name else "")
    try:
        # Only the chosen split is downloaded and prepared (FlashRAG's train splits are large).
        chosen = _pick_split(datasets.get_dataset_split_names(path, name), split, source)
        rows = datasets.load_dataset(path, name, split=chosen)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (connection, missing config, bad files)
        raise DataError(f"{source}: cannot load with datasets.load_dataset ({type(err).__name__}: {err})") from None
    return rows, f"{source}[{chosen}]"


def _is_nq(record: QARecord, source: str) -> bool:
    """Natural Questions rows, whose FlashRAG answer lists also hold long-answer passages."""
    meta = record.metadata
    return (
        str(meta.get("data_source", "")).lower() == "nq"
        or record.id.startswith("nq_")
        or meta.get("layout") == "nq_open"
        or source.endswith(":nq") or ":nq[" in source
    )


def read_qa(
    path: str | os.PathLike,
    name: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    images_dir: str | os.PathLike | None = None,
    max_answer_chars: int | None = 80,
) -> LoadResult:
    """Load one source into `QARecord`s, with counts of what was filtered.

    `path` is a local file, a local dataset directory (read by `datasets.load_dataset`, like a Hub id), a Hub
    id, or a FlashRAG benchmark name (`nq`, `triviaqa`, ...). `limit` keeps the first N records after filtering.
    `max_answer_chars=None` keeps NQ's long answers.
    """
    local = Path(path)
    if local.is_file():
        rows: Iterable[Any] = _read_rows(local)
        source = str(local)
        images_dir = images_dir or _default_images_dir(local)
        if split is not None:
            log.info("%s: split=%s ignored for a single file", source, split)
    else:
        # A path that names a data file but is not there is a typo, not a Hub id: say so without a network call.
        if not local.exists() and local.suffix.lower() in (".jsonl", ".json", ".parquet"):
            raise DataError(f"{path}: no such file")
        rows, source = _hub_rows(str(path), name, split)

    result = LoadResult(records=[], source=source)
    for index, row in enumerate(rows):
        record = row_to_record(row, index, source, images_dir)
        record.metadata["source"] = source
        if max_answer_chars is not None and _is_nq(record, source):
            short = [a for a in record.answers if len(a) <= max_answer_chars]
            result.dropped_answers += len(record.answers) - len(short)
            if not short:
                result.dropped_records += 1
                continue
            record.answers = short
        result.records.append(record)
        if limit is not None and len(result.records) >= limit:
            break
    if result.dropped_answers:
        log.warning(
            "%s: dropped %d gold answers longer than %d characters (NQ long answers); %d records had none left "
            "and were skipped",
            source, result.dropped_answers, max_answer_chars, result.dropped_records,
        )
    return result


def load_qa(path: str | os.PathLike, **kwargs) -> list[QARecord]:
    """`read_qa(...).records`: the records of one source."""
    return read_qa(path, **kwargs).records


def load_from_spec(spec, max_answer_chars: int | None = 80) -> list[QARecord]:
    """Records for a recipe `DatasetSpec`."""
    return load_qa(
        spec.path, name=spec.name, split=spec.split, limit=spec.limit, images_dir=spec.images_dir,
        max_answer_chars=max_answer_chars,
    )
