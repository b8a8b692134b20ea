"""Corpus readers (both formats, jsonl and parquet) and the packed document store."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seekrl.envs.corpus import CorpusError, DocStore, format_contents, iter_corpus, split_contents


def test_title_text_and_contents_formats_read_the_same(small_corpus, tmp_path):
    records = [json.loads(line) for line in small_corpus.read_text().splitlines()]
    wiki18 = tmp_path / "wiki18.jsonl"
    wiki18.write_text("".join(json.dumps({"id": r["id"], "contents": format_contents(r["title"], r["text"])}) + "\n"
                              for r in records))
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet, row_group_size=64)

    from_title_text = list(iter_corpus(small_corpus))
    assert from_title_text[0] == ("doc00000", '"Constantin Medien"\n' + records[0]["text"])
    assert list(iter_corpus(wiki18)) == from_title_text
    assert list(iter_corpus(parquet)) == from_title_text
    assert len(from_title_text) == len(records)


def test_search_r1_sample_keeps_contents_verbatim(shared_data):
    path = shared_data / "searchr1_format" / "wiki_sample_1000.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    docs = list(iter_corpus(path))
    assert len(docs) == 1000
    assert docs[0] == (first["id"], first["contents"])
    assert split_contents(docs[0][1])[0] == "Evan Morris"


def test_docstore_round_trip_is_exact_and_hash_ignores_file_format(small_corpus, tmp_path):
    store = DocStore.build(small_corpus, tmp_path / "a", progress=False)
    expected = list(iter_corpus(small_corpus))
    assert len(store) == len(expected)
    assert [(store.doc(i)["id"], store.doc(i)["contents"]) for i in range(len(store))] == expected
    reopened = DocStore(tmp_path / "a")
    assert reopened.doc(123) == {"id": expected[123][0], "contents": expected[123][1]}

    wiki18 = tmp_path / "same.jsonl"
    wiki18.write_text("".join(json.dumps({"id": i, "contents": c}, ensure_ascii=False) + "\n"
                              for i, c in expected))
    assert DocStore.build(wiki18, tmp_path / "b", progress=False).sha256 == store.sha256


def test_non_ascii_contents_survive_the_store(tmp_path):
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": "1", "title": "Zürich", "text": "Zürich – 苏黎世 🇨🇭"}, {"id": "2", "title": "", "text": ""}]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    store = DocStore.build(corpus, tmp_path / "s", progress=False)
    assert store.doc(0)["contents"] == '"Zürich"\nZürich – 苏黎世 🇨🇭'
    assert store.doc(1)["contents"] == '""\n'
    assert store.info["num_docs"] == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [('{"title": "x", "text": "y"}', "no 'id' field"), ('{"id": 1, "body": "y"}', "needs 'contents'"),
     ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")],
)
def test_bad_corpus_lines_name_file_and_line(tmp_path, line, message):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": 0, "contents": "\\"T\\"\\nok"}\n' + line + "\n")
    with pytest.raises(CorpusError, match=rf"bad.jsonl:2: .*{message}"):
        list(iter_corpus(corpus))


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(CorpusError, match="no such corpus file"):
        list(iter_corpus(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CorpusError, match="no documents"):
        DocStore.build(tmp_path / "empty.jsonl", tmp_path / "s", progress=False)
