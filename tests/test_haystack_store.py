"""turboann.integrations.haystack: Haystack's DocumentStoreBaseTests (filters included), then the retriever,
persistence and crash-safe saves."""
import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")   # no usage reports from tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from haystack.dataclasses import ByteStream, SparseEmbedding  # noqa: E402
from haystack.document_stores.errors import DuplicateDocumentError  # noqa: E402
from haystack.document_stores.types import DuplicatePolicy  # noqa: E402
from haystack.errors import FilterError  # noqa: E402
from haystack.testing.document_store import DocumentStoreBaseTests  # noqa: E402

from turboann.integrations.haystack import (StoreFileError, TurboannDocumentStore,  # noqa: E402
                                            TurboannEmbeddingRetriever)


class TestHaystackConformance(DocumentStoreBaseTests):
    """The maintainers' base suite: count, write (every DuplicatePolicy), delete and all filter tests."""

    @pytest.fixture
    def document_store(self):
        return TurboannDocumentStore()

    def test_write_documents(self, document_store):
        """The default policy (NONE) acts as FAIL, as in Haystack's in-memory store."""
        docs = [Document(id="1", content="one")]
        assert document_store.write_documents(docs) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents(docs)
        self.assert_documents_are_equal(document_store.filter_documents(), docs)


def unit(*values):
    v = np.array(values, float)
    return (v / np.linalg.norm(v)).tolist()


@pytest.fixture
def store():
    s = TurboannDocumentStore(bits=4)
    s.write_documents([
        Document(id="a", content="alpha", meta={"lang": "en", "year": 2001}, embedding=unit(1, 0, 0, 0)),
        Document(id="b", content="beta", meta={"lang": "de", "year": 2010}, embedding=unit(1, 1, 0, 0)),
        Document(id="c", content="gamma", meta={"lang": "en", "year": 2020}, embedding=unit(0, 1, 0, 0)),
        Document(id="d", content="delta", meta={"lang": "fr"}, embedding=unit(0, 0, 1, 0)),
        Document(id="e", content="no vector", meta={"lang": "en"},
                 blob=ByteStream(b"\x00\x01", mime_type="application/octet-stream"),
                 sparse_embedding=SparseEmbedding(indices=[3], values=[0.5])),
    ])
    return s


def test_embedding_retrieval_scores_and_filters(store):
    found = store.embedding_retrieval(unit(1, 0.1, 0, 0), top_k=2)
    assert [d.id for d in found] == ["a", "b"]
    assert found[0].score == pytest.approx(1 / np.sqrt(1.01), abs=1e-6) and found[0].embedding is None
    en = store.embedding_retrieval(unit(0, 0, 1, 0), top_k=5, filters={"field": "meta.lang", "operator": "==",
                                                                          "value": "en"})
    assert [d.id for d in en] == ["a", "c"]        # "e" has no embedding: never retrieved by one
    scaled = store.embedding_retrieval(unit(1, 0, 0, 0), top_k=1, scale_score=True, return_embedding=True)
    assert scaled[0].score == pytest.approx(1.0, abs=1e-6)
    assert scaled[0].embedding == pytest.approx(unit(1, 0, 0, 0))
    assert store.embedding_retrieval(unit(1, 0, 0, 0), top_k=0) == []
    with pytest.raises(ValueError, match=r"query must be a 1-D vector of shape \(4,\), got shape \(3,\)"):
        store.embedding_retrieval([1.0, 0.0, 0.0])


def test_documents_come_back_as_written(store):
    [e] = store.filter_documents({"field": "id", "operator": "==", "value": "e"})
    assert e.blob.data == b"\x00\x01" and e.sparse_embedding.values == [0.5] and e.embedding is None
    assert [d.id for d in store.filter_documents({"field": "content", "operator": "in",
                                                  "value": ["beta", "delta"]})] == ["b", "d"]
    assert store.count_documents_by_filter({"field": "meta.year", "operator": ">=", "value": 2010}) == 2
    nested = TurboannDocumentStore()
    nested.write_documents([Document(content="x", meta={"source": {"page": 3}}), Document(content="y")])
    assert [d.content for d in nested.filter_documents({"field": "meta.source.page", "operator": "==",
                                                        "value": 3})] == ["x"]


def test_malformed_filters_raise_filter_error(store):
    for bad in ({"field": "lang", "operator": "==", "value": "en"},           # no meta. prefix
                {"field": "meta.lang", "operator": "~=", "value": "en"},
                {"operator": "XOR", "conditions": []},
                {"field": "meta.year", "operator": "<", "value": {"y": 1}}):
        with pytest.raises(FilterError):
            store.filter_documents(bad)


def test_write_policies_are_all_or_nothing(store):
    new = Document(id="n", content="new", embedding=unit(0, 0, 0, 1))
    with pytest.raises(DuplicateDocumentError, match="'a'"):
        store.write_documents([new, Document(id="a", content="again", embedding=unit(0, 0, 0, 1))],
                              policy=DuplicatePolicy.FAIL)
    assert store.count_documents() == 5        # "n" was not written either
    with pytest.raises(ValueError, match="embeddings must all have the store's length 4"):
        store.write_documents([new, Document(id="m", content="short", embedding=[1.0, 2.0])])
    assert store.count_documents() == 5 and len(store._documents.index) == 4
    assert store.write_documents([Document(id="a", content="again", embedding=unit(0, 0, 0, 1)), new],
                                 policy=DuplicatePolicy.SKIP) == 1
    assert store.write_documents([Document(id="a", content="again", embedding=unit(0, 0, 0, 1))],
                                 policy=DuplicatePolicy.OVERWRITE) == 1
    nearest = store.embedding_retrieval(unit(0, 0, 0, 1), top_k=3)    # "a" now points where "n" does
    assert {d.id for d in nearest[:2]} == {"n", "a"} and nearest[2].score == pytest.approx(0.0, abs=1e-6)
    assert store.filter_documents({"field": "id", "operator": "==", "value": "a"})[0].content == "again"
    with pytest.raises(TypeError, match="policy must be a DuplicatePolicy"):
        store.write_documents([new], policy="skip")


def test_delete_by_filter_and_all(store):
    assert store.delete_by_filter({"field": "meta.lang", "operator": "==", "value": "en"}) == 3
    assert sorted(d.id for d in store.filter_documents()) == ["b", "d"] and len(store._documents.index) == 2
    store.delete_all_documents()
    assert store.count_documents() == 0 and store.embedding_retrieval(unit(1, 0, 0, 0)) == []


def test_retriever_in_a_pipeline_and_serialised(tmp_path, store):
    retriever = TurboannEmbeddingRetriever(store, top_k=1, filters={"field": "meta.lang", "operator": "==",
                                                                    "value": "de"})
    pipeline = Pipeline()
    pipeline.add_component("retriever", retriever)
    out = pipeline.run({"retriever": {"query_embedding": unit(1, 0, 0, 0)}})
    assert [d.id for d in out["retriever"]["documents"]] == ["b"]
    store.path = str(tmp_path / "s")
    store.save()
    again = TurboannEmbeddingRetriever.from_dict(retriever.to_dict())
    assert again.document_store.count_documents() == 5 and again.top_k == 1
    assert [d.id for d in again.run(query_embedding=unit(0, 1, 0, 0))["documents"]] == ["b"]   # its own filter
    english = {"field": "meta.lang", "operator": "==", "value": "en"}
    assert [d.id for d in again.run(query_embedding=unit(0, 1, 0, 0), filters=english)["documents"]] == ["c"]
    with pytest.raises(TypeError, match="document_store must be a TurboannDocumentStore"):
        TurboannEmbeddingRetriever(object())


def test_save_and_reopen_and_crash_safety(tmp_path, store, monkeypatch):
    path = tmp_path / "s"
    store.save(path)
    reopened = TurboannDocumentStore(path=str(path))
    assert reopened.filter_documents() == store.filter_documents()
    assert TurboannDocumentStore.from_dict(reopened.to_dict()).count_documents() == 5
    reopened.delete_documents(["a", "b"])
    from turboann.integrations import _documents

    def crash(self, target):
        raise OSError("killed while writing the index")

    monkeypatch.setattr(_documents.Index, "save", crash)
    with pytest.raises(OSError, match="killed"):
        reopened.save()
    monkeypatch.undo()
    assert TurboannDocumentStore(path=str(path)).count_documents() == 5
    with pytest.raises(ValueError, match="save needs a directory"):
        TurboannDocumentStore().save()
    (path / "manifest.json").write_text('{"format": "turboann-document-store", "version": 99}')
    with pytest.raises(StoreFileError, match="format version 99"):
        TurboannDocumentStore(path=str(path))
