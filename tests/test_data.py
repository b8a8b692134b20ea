"""Every layout under ../shared/data loads into QARecord with the right counts and answers."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from seekrl.config import DatasetSpec
from seekrl.data import DataError, load_from_spec, load_qa, open_image, read_qa, row_to_record

# (relative path, records, first id, first answers[:2], layout)
LAYOUTS = [
    ("multihop/questions.jsonl", 441, "5a7613c15542994ccc9186bf", ["Gesellschaft mit beschränkter Haftung"], "flashrag"),
    ("qa/bamboogle_125.jsonl", 125, "1", ["james madison"], "bamboogle"),
    ("qa/test_bamboogle.jsonl", 125, "Bamboogle_39", ["wool merchant"], "flashrag"),
    ("qa/test_popqa.jsonl", 512, "popqa_3474310", ["Bloomsburg", "The Only Town in Pennsylvania"], "flashrag"),
    ("qa/dev_tq.jsonl", 125, "tq_qg_3477", ["türkiye", "türkei"], "flashrag"),
    ("qa/test_2wiki.jsonl", 512, "2wiki_db6a0c8c0bdd11eba7f7acde48001122", ["20 July 1851"], "flashrag"),
    ("qa/test_musique.jsonl", 512, "musique_4hop1__342858_131850_33952_34109", ["KUAT-TV 6"], "flashrag"),
    ("qa/test_hotpotqa.jsonl", 512, "hotpotqa_5a7c634c55429907fabeef79", None, "flashrag"),
    ("qa/nq_open_dev.jsonl", 3610, "nq_open_dev-0", ["14 December 1972 UTC", "December 1972"], "nq_open"),
    ("hotpotqa/dev_distractor_100.jsonl", 100, "5a7613c15542994ccc9186bf",
     ["Gesellschaft mit beschränkter Haftung"], "hotpotqa"),
    ("musique/train_100.json", 100, "2hop__150763_14904", ["G. Stanley Hall", "Stanley Hall"], "musique"),
    ("2wiki/dev_10.jsonl", 10, "f3e6c20309ab11ebbdb0ac1f6bf848b6", ["Come With Me (Pure Imagination)"], "2wiki"),
    ("searchr1_format/qa_dev_875.parquet", 875 - 31, "tq_qg_3477", ["türkiye", "türkei"], "searchr1"),
    ("multimodal/infoseek_mini_5.parquet", 5, "infoseek_mini_5-0", ["Spain", "Kingdom of Spain"], "mmsearch"),
    ("multimodal/okvqa_20/dev.jsonl", 20, "1777145", ["carrots", "carrotts", "vegetables"], "okvqa"),
    ("multimodal/easy_vqa/test_questions_img0-49.json", 480, "easyvqa-0", ["triangle"], "easy_vqa"),
]


@pytest.mark.parametrize("rel, count, first_id, first_answers, layout", LAYOUTS, ids=[r[0] for r in LAYOUTS])
def test_every_shared_layout_loads(shared_data, rel, count, first_id, first_answers, layout):
    records = load_qa(shared_data / rel)
    assert len(records) == count
    first = records[0]
    assert first.id == first_id
    assert first.metadata["layout"] == layout
    if first_answers is not None:
        assert first.answers[: len(first_answers)] == first_answers
    assert all(r.question.strip() and r.answers and all(isinstance(a, str) and a for a in r.answers) for r in records)
    assert len({r.id for r in records}) == count, "ids must be unique within a source"


def test_multihop_keeps_gold_document_ids(shared_data):
    records = load_qa(shared_data / "multihop/questions.jsonl")
    by_dataset = {}
    for r in records:
        by_dataset[r.metadata["dataset"]] = by_dataset.get(r.metadata["dataset"], 0) + 1
    assert by_dataset == {"hotpotqa": 220, "musique": 209, "2wikimultihopqa": 12}
    assert records[0].metadata["gold_doc_ids"] == ["doc00005", "doc00007"]


def test_official_layouts_keep_their_context(shared_data):
    hotpot = load_qa(shared_data / "hotpotqa/dev_distractor_100.jsonl")[0]
    assert [title for title, _ in hotpot.metadata["context"]][:1] and hotpot.metadata["type"] == "bridge"
    musique = load_qa(shared_data / "musique/train_100.json")[0]
    assert sum(p["is_supporting"] for p in musique.metadata["paragraphs"]) == 2


def test_nq_long_answers_are_dropped_and_counted(shared_data, caplog):
    with caplog.at_level(logging.WARNING, logger="seekrl.data"):
        result = read_qa(shared_data / "qa/dev_nq.jsonl")
    assert (len(result.records), result.dropped_answers, result.dropped_records) == (94, 76, 31)
    assert all(len(a) <= 80 for r in result.records for a in r.answers)
    assert "dropped 76 gold answers longer than 80 characters" in caplog.text
    kept = read_qa(shared_data / "qa/dev_nq.jsonl", max_answer_chars=None)
    assert len(kept.records) == 125 and kept.dropped_answers == 0
    # Other datasets keep long answers: they are real answers there.
    assert len(load_qa(shared_data / "qa/dev_hotpotqa.jsonl")) == 125


def test_searchr1_ground_truth_is_split(shared_data):
    records = load_qa(shared_data / "searchr1_format/qa_dev_875.parquet", max_answer_chars=None)
    assert len(records) == 875
    first = records[0]
    assert first.question.startswith("Lasting from 1299 to 1922")
    assert "turkey" in first.answers and "<|answer_split|>" not in "".join(first.answers)
    assert {r.metadata["data_source"] for r in records} == {"tq", "popqa", "hotpotqa", "musique", "nq", "Bamboogle",
                                                            "2wiki"}


def test_images_open_from_bytes_and_paths(shared_data):
    infoseek = load_qa(shared_data / "multimodal/infoseek_mini_5.parquet")
    assert all(len(r.images) == 1 and isinstance(r.images[0], bytes) for r in infoseek)
    image = open_image(infoseek[0].images[0])
    assert image.mode == "RGB" and min(image.size) > 32
    okvqa = load_qa(shared_data / "multimodal/okvqa_20/dev.jsonl")
    assert okvqa[0].images[0].endswith("okvqa_20/images/1777145.jpg")
    assert len(okvqa[0].metadata["annotator_answers"]) == 10
    assert open_image(okvqa[0].images[0]).size[0] > 100
    easy = load_qa(shared_data / "multimodal/easy_vqa/test_questions_img0-49.json")
    assert open_image(easy[0].images[0]).size == (64, 64)


def test_hub_path_through_datasets_on_a_local_dataset_directory(shared_data, tmp_path, monkeypatch):
    """The same `datasets.load_dataset(path, config)` call that reads RUC-NLPIR/FlashRAG_datasets."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = tmp_path / "FlashRAG_datasets"
    (repo / "nq").mkdir(parents=True)
    (repo / "bamboogle").mkdir()
    shutil.copy(shared_data / "qa/dev_nq.jsonl", repo / "nq/dev.jsonl")
    shutil.copy(shared_data / "qa/test_nq.jsonl", repo / "nq/test.jsonl")
    shutil.copy(shared_data / "qa/test_bamboogle.jsonl", repo / "bamboogle/test.jsonl")
    (repo / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: nq\n  data_files:\n  - {split: dev, path: nq/dev.jsonl}\n  - {split: test, path: nq/test.jsonl}\n"
        "- config_name: bamboogle\n  data_files:\n  - {split: test, path: bamboogle/test.jsonl}\n---\n"
    )
    test_nq = read_qa(repo, name="nq")
    assert test_nq.source.endswith(":nq[test]") and len(test_nq.records) == 512 - 110
    dev_nq = read_qa(repo, name="nq", split="dev")
    assert len(dev_nq.records) == 94 and dev_nq.dropped_records == 31
    bamboogle = load_from_spec(DatasetSpec(path=str(repo), name="bamboogle", limit=10))
    assert len(bamboogle) == 10 and bamboogle[0].answers == ["wool merchant"]
    with pytest.raises(DataError, match=r"no split 'train'; available: \['dev', 'test'\]"):
        read_qa(repo, name="nq", split="train")
    with pytest.raises(DataError, match="BuilderConfig 'popqa' not found"):
        read_qa(repo, name="popqa")


def test_missing_field_names_file_row_and_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": "a", "question": "q?", "golden_answers": ["x"]}, {"id": "b", "golden_answers": ["y"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert str(err.value).startswith(f"{path}: row 1: missing field 'question'")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "q", "golden_answers": []}\n', "row 0: field 'golden_answers' has no answer"),
        ('{"question": "q", "golden_answers": ["a"]}\n{not json\n', "line 2: not valid JSON"),
        ('{"question": "q", "label": "a"}\n', "row 0: unrecognised layout (fields ['label', 'question'])"),
        ('[1, 2]\n', "row 0: expected [question, answer, image_id]"),
    ],
)
def test_bad_rows_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_qa(tmp_path / "missing.jsonl")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match="unreadable parquet file"):
        load_qa(corrupt)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"question": "caf\xe9", "golden_answers": ["x"]}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_qa(latin)
    csv = tmp_path / "data.csv"
    csv.write_text("question,answer\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_qa(csv)
    with pytest.raises(DataError, match="give images_dir"):
        row_to_record({"question": "q", "image_id": 3, "golden_answers": ["a"]}, 0, "x.jsonl")


def test_limit_counts_kept_records(shared_data):
    assert [r.id for r in load_qa(shared_data / "qa/dev_nq.jsonl", limit=3)] == [
        r.id for r in load_qa(shared_data / "qa/dev_nq.jsonl")[:3]
    ]
