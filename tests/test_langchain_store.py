"""turboann.integrations.langchain: LangChain's own VectorStore conformance suite, then what it does not cover."""
import asyncio
import math

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings  # noqa: E402
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests  # noqa: E402

from turboann.integrations.langchain import StoreFileError, TurboannVectorStore  # noqa: E402


class TestLangChainConformance(VectorStoreIntegrationTests):
    """The maintainers' suite, sync and async, against a fresh store each test."""

    @pytest.fixture()
    def vectorstore(self):
        store = TurboannVectorStore(embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.delete()


class WordEmbeddings(Embeddings):
    """Texts embedded as counts of a few words: nearest neighbours are predictable."""
    WORDS = ("cat", "dog", "fish", "bird", "car", "bus", "tree", "rock")

    def embed_documents(self, texts):
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text):
        words = text.lower().split()
        return [float(words.count(w)) + 0.01 * (i + 1) for i, w in enumerate(self.WORDS)]


@pytest.fixture()
def pets():
    store = TurboannVectorStore(WordEmbeddings(), bits=4)
    store.add_texts(["cat", "cat dog", "dog", "fish", "bird", "car", "bus", "tree"],
                    metadatas=[{"kind": "pet", "legs": 4, "year": 2020}, {"kind": "pet", "legs": 4, "year": 2021},
                               {"kind": "pet", "legs": 4, "year": 2022}, {"kind": "pet", "legs": 0, "year": 2023},
                               {"kind": "wild", "legs": 2}, {"kind": "thing", "tags": ["red"]},
                               {"kind": "thing", "tags": ["red", "big"]}, {"kind": "plant"}],
                    ids=["cat", "catdog", "dog", "fish", "bird", "car", "bus", "tree"])
    return store


def ids(docs):
    return [d.id for d in docs]


def test_scores_are_exact_cosine_similarities(pets):
    [(doc, score)] = pets.similarity_search_with_score("cat", k=1)
    assert doc.id == "cat" and score == pytest.approx(1.0, abs=1e-6)
    q = np.array(WordEmbeddings().embed_query("cat"))
    x = np.array(WordEmbeddings().embed_query("cat dog"))
    (_, s), = [(d, s) for d, s in pets.similarity_search_with_score("cat", k=8) if d.id == "catdog"]
    assert s == pytest.approx(q @ x / np.linalg.norm(q) / np.linalg.norm(x), abs=1e-6)
    relevance = pets.similarity_search_with_relevance_scores("cat", k=2)
    assert [r for _, r in relevance] == pytest.approx([1.0, (1 + s) / 2], abs=1e-6)


def test_filters(pets):
    search = lambda f, k=8: set(ids(pets.similarity_search("cat", k=k, filter=f)))  # noqa: E731
    assert search({"kind": "pet"}) == {"cat", "catdog", "dog", "fish"}
    assert search({"kind": "pet", "legs": 0}) == {"fish"}
    assert search({"legs": {"$gt": 0}}) == {"cat", "catdog", "dog", "bird"}
    assert search({"legs": {"$lt": 4}}) == {"fish", "bird"}
    assert search({"year": {"$gte": 2021, "$lte": 2022}}) == {"catdog", "dog"}
    assert search({"kind": {"$in": ["wild", "plant"]}}) == {"bird", "tree"}
    assert search({"kind": {"$nin": ["pet", "thing"]}}) == {"bird", "tree"}
    assert search({"kind": {"$ne": "pet"}}) == {"bird", "car", "bus", "tree"}
    assert search({"$or": [{"kind": "wild"}, {"legs": 0}]}) == {"bird", "fish"}
    assert search({"$and": [{"kind": "pet"}, {"$not": {"legs": 4}}]}) == {"fish"}
    assert search({"tags": {"$exists": True}}) == {"car", "bus"}
    assert search({"tags": ["red", "big"]}) == {"bus"}
    assert search({"kind": "none"}) == set()
    # the k nearest among the matches, not the matches among the k nearest
    assert ids(pets.similarity_search("cat", k=1, filter={"kind": "thing"})) in (["car"], ["bus"])


def test_bad_filters_and_arguments_raise_and_change_nothing(pets):
    with pytest.raises(ValueError, match=r"operator .gt. on .legs. needs a number or an ISO 8601 date, got str"):
        pets.similarity_search("cat", filter={"legs": {"$gt": "many"}})
    with pytest.raises(ValueError, match=r"operator '\$regex' on 'kind' is unknown"):
        pets.similarity_search("cat", filter={"kind": {"$regex": "p.*"}})
    with pytest.raises(ValueError, match=r"\$in on 'kind' needs a list, got str"):
        pets.similarity_search("cat", filter={"kind": {"$in": "pet"}})
    with pytest.raises(TypeError, match="filter must be a dict"):
        pets.similarity_search("cat", filter=[("kind", "pet")])
    with pytest.raises(ValueError, match=r"k must be >= 1, got 0"):
        pets.similarity_search("cat", k=0)
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        pets.similarity_search("cat", colour="red")
    with pytest.raises(ValueError, match=r"metadatas must have one entry per text \(2\), got 1"):
        pets.add_texts(["rock", "rock cat"], metadatas=[{}])
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        pets.add_texts(["rock"], metadatas=[{"when": object()}])
    with pytest.raises(TypeError, match="embedding must be a langchain_core Embeddings, got str"):
        TurboannVectorStore("not a model")
    with pytest.raises(ValueError, match="metric must be one of"):
        TurboannVectorStore(WordEmbeddings(), metric="hamming")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        TurboannVectorStore(WordEmbeddings(), colour="red")
    assert len(pets) == 8 and len(pets._documents.index) == 8


def test_embedding_of_the_wrong_length_changes_nothing(pets):
    class Short(WordEmbeddings):
        def embed_documents(self, texts):
            return [[1.0, 2.0, 3.0] for _ in texts]

    pets._embedding = Short()
    with pytest.raises(ValueError, match="embeddings must all have the store's length 8, got lengths 3, 8"):
        pets.add_texts(["cat"], ids=["cat"])
    assert [d.page_content for d in pets.get_by_ids(["cat"])] == ["cat"]
    assert len(pets._documents.index) == 8


def test_max_marginal_relevance_prefers_diverse_results(pets):
    relevant = ids(pets.max_marginal_relevance_search("cat", k=2, fetch_k=8, lambda_mult=1.0))
    assert relevant == ["cat", "catdog"]
    diverse = ids(pets.max_marginal_relevance_search("cat", k=2, fetch_k=8, lambda_mult=0.1))
    assert diverse[0] == "cat" and diverse[1] != "catdog"
    only_things = ids(pets.max_marginal_relevance_search("car", k=2, fetch_k=8, filter={"kind": "thing"}))
    assert sorted(only_things) == ["bus", "car"]
    asynchronous = asyncio.run(pets.amax_marginal_relevance_search("cat", k=2, fetch_k=8, lambda_mult=0.1))
    assert ids(asynchronous) == diverse


def test_from_texts_and_l2_scores_are_distances():
    store = TurboannVectorStore.from_texts(["cat", "dog"], WordEmbeddings(), ids=["a", "b"], metric="l2", seed=3)
    (doc, d), (_, d2) = store.similarity_search_with_score("cat", k=2)
    assert doc.id == "a" and d == pytest.approx(0.0, abs=1e-6) and d2 == pytest.approx(math.sqrt(2), abs=1e-5)
    assert store._documents.index.seed == 3


def test_save_and_load_round_trip(tmp_path, pets):
    pets.save(tmp_path / "s")
    loaded = TurboannVectorStore.load(tmp_path / "s", embedding=WordEmbeddings())
    assert len(loaded) == 8
    assert loaded.get_by_ids(["bus"]) == [Document(id="bus", page_content="bus", metadata={"kind": "thing",
                                                                                            "tags": ["red", "big"]})]
    assert ids(loaded.similarity_search("dog", k=3)) == ids(pets.similarity_search("dog", k=3))
    loaded.add_texts(["rock"], ids=["rock"])     # the loaded store works on its own copy
    assert len(TurboannVectorStore.load(tmp_path / "s", embedding=WordEmbeddings())) == 8


def test_a_failed_save_leaves_the_previous_one(tmp_path, pets, monkeypatch):
    from turboann import _files

    pets.save(tmp_path / "s")
    pets.delete(["cat", "dog"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_files, "write_text", crash)    # the manifest is never written
    with pytest.raises(OSError, match="disk full"):
        pets.save(tmp_path / "s")
    monkeypatch.undo()
    loaded = TurboannVectorStore.load(tmp_path / "s", embedding=WordEmbeddings())
    assert len(loaded) == 8 and ids(loaded.get_by_ids(["cat", "dog"])) == ["cat", "dog"]
    pets.save(tmp_path / "s")    # the next save succeeds and sweeps the orphans away
    assert len(TurboannVectorStore.load(tmp_path / "s", embedding=WordEmbeddings())) == 6
    assert len(list((tmp_path / "s").iterdir())) == 3


def test_load_refuses_what_is_not_a_langchain_store(tmp_path):
    with pytest.raises(StoreFileError, match="holds no saved store"):
        TurboannVectorStore.load(tmp_path, embedding=WordEmbeddings())
    from turboann.integrations._documents import IndexedDocuments

    IndexedDocuments(framework={"store": "haystack"}).save(tmp_path / "h")
    with pytest.raises(StoreFileError, match="holds a 'haystack' store, not a LangChain one"):
        TurboannVectorStore.load(tmp_path / "h", embedding=WordEmbeddings())


def test_async_paths_embed_asynchronously(pets):
    calls = []

    class Counting(WordEmbeddings):
        async def aembed_query(self, text):
            calls.append(text)
            return self.embed_query(text)

    pets._embedding = Counting()
    found = asyncio.run(pets.asimilarity_search("dog", k=1, filter={"kind": "pet"}))
    assert ids(found) == ["dog"] and calls == ["dog"]


def test_retriever(pets):
    retriever = pets.as_retriever(search_kwargs={"k": 2, "filter": {"kind": "thing"}})
    assert sorted(ids(retriever.invoke("car"))) == ["bus", "car"]
