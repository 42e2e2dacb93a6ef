"""turboann.integrations.llama_index through VectorStoreIndex with a mock embedding: retrieval, metadata
filters, deletion by source document, persistence and crash-safe saves."""
import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator, MetadataFilter,  # noqa: E402
                                                  MetadataFilters, VectorStoreQuery, VectorStoreQueryMode)

from turboann.integrations.llama_index import StoreFileError, TurboannVectorStore  # noqa: E402

WORDS = ("apple", "pear", "plum", "fig", "oak", "elm", "pine", "ash")


class WordCountEmbedding(BaseEmbedding):
    """A text's embedding counts a few words (plus a small constant): nearest neighbours are predictable."""

    def _embed(self, text):
        words = text.lower().replace(".", " ").split()
        return [words.count(w) + 0.01 * (i + 1) for i, w in enumerate(WORDS)]

    def _get_query_embedding(self, query):
        return self._embed(query)

    async def _aget_query_embedding(self, query):
        return self._embed(query)

    def _get_text_embedding(self, text):
        return self._embed(text)


EMBED = WordCountEmbedding()
DOCS = [Document(text="apple apple", doc_id="fruit-1", metadata={"kind": "fruit", "price": 3, "tags": ["red"]}),
        Document(text="pear", doc_id="fruit-2", metadata={"kind": "fruit", "price": 5, "tags": ["green", "sweet"]}),
        Document(text="plum fig", doc_id="fruit-3", metadata={"kind": "fruit", "price": 8, "note": "Dried Plum"}),
        Document(text="oak", doc_id="tree-1", metadata={"kind": "tree", "tags": []}),
        Document(text="elm pine", doc_id="tree-2", metadata={"kind": "tree", "price": 100})]


@pytest.fixture()
def built():
    store = TurboannVectorStore(bits=4)
    index = VectorStoreIndex.from_documents(DOCS, storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=EMBED)
    return store, index


def texts(results):
    return [r.node.get_content() for r in results]


def retrieve(index, query, k=5, filters=None):
    return texts(index.as_retriever(similarity_top_k=k, filters=filters).retrieve(query))


def test_retrieval_through_vector_store_index(built):
    store, index = built
    results = index.as_retriever(similarity_top_k=2).retrieve("apple")
    assert texts(results)[0] == "apple apple"
    q, x = np.array(EMBED.get_query_embedding("apple")), np.array(EMBED.get_text_embedding("apple apple"))
    assert results[0].score == pytest.approx(q @ x / np.linalg.norm(q) / np.linalg.norm(x), abs=1e-9)   # exact
    node = results[0].node
    assert node.metadata == {"kind": "fruit", "price": 3, "tags": ["red"]} and node.ref_doc_id == "fruit-1"
    assert len(store.get_nodes()) == 5


def f(key, value, op=FilterOperator.EQ):
    return MetadataFilter(key=key, value=value, operator=op)


@pytest.mark.parametrize("filters, expected", [
    (MetadataFilters(filters=[f("kind", "tree")]), {"oak", "elm pine"}),
    (MetadataFilters(filters=[f("price", 5, FilterOperator.GT)]), {"plum fig", "elm pine"}),
    (MetadataFilters(filters=[f("price", 5, FilterOperator.LTE), f("kind", "fruit")]), {"apple apple", "pear"}),
    (MetadataFilters(filters=[f("price", 3), f("price", 100)], condition=FilterCondition.OR), {"apple apple",
                                                                                              "elm pine"}),
    (MetadataFilters(filters=[f("kind", "tree"), f("price", 8)], condition=FilterCondition.NOT),
     {"apple apple", "pear"}),
    (MetadataFilters(filters=[f("kind", ["tree"], FilterOperator.NIN)]), {"apple apple", "pear", "plum fig"}),
    (MetadataFilters(filters=[f("price", [3, 8], FilterOperator.IN)]), {"apple apple", "plum fig"}),
    (MetadataFilters(filters=[f("price", 3, FilterOperator.NE), f("kind", "fruit")]), {"pear", "plum fig"}),
    (MetadataFilters(filters=[f("tags", "green", FilterOperator.CONTAINS)]), {"pear"}),
    (MetadataFilters(filters=[f("tags", ["red", "sweet"], FilterOperator.ANY)]), {"apple apple", "pear"}),
    (MetadataFilters(filters=[f("tags", ["green", "sweet"], FilterOperator.ALL)]), {"pear"}),
    (MetadataFilters(filters=[f("note", "plum", FilterOperator.TEXT_MATCH)]), set()),
    (MetadataFilters(filters=[f("note", "plum", FilterOperator.TEXT_MATCH_INSENSITIVE)]), {"plum fig"}),
    (MetadataFilters(filters=[f("tags", None, FilterOperator.IS_EMPTY)]), {"plum fig", "oak", "elm pine"}),
    (MetadataFilters(filters=[f("kind", "fruit"), MetadataFilters(filters=[f("price", 3), f("price", 8)],
                                                                  condition=FilterCondition.OR)]),
     {"apple apple", "plum fig"}),
])
def test_metadata_filters(built, filters, expected):
    _, index = built
    assert set(retrieve(index, "apple pear plum fig oak elm pine", filters=filters)) == expected


def test_query_modes_ids_and_errors(built):
    store, _ = built
    q = EMBED.get_query_embedding("apple fig")
    only = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5, doc_ids=["fruit-3", "tree-1"]))
    assert [n.get_content() for n in only.nodes] == ["plum fig", "oak"] and only.similarities[0] > only.similarities[1]
    mmr = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=2, mode=VectorStoreQueryMode.MMR,
                                       mmr_threshold=1.0))
    assert [n.get_content() for n in mmr.nodes] == [n.get_content() for n in store.query(
        VectorStoreQuery(query_embedding=q, similarity_top_k=2)).nodes]
    with pytest.raises(ValueError, match="query.mode must be 'default' or 'mmr', got 'hybrid'"):
        store.query(VectorStoreQuery(query_embedding=q, mode=VectorStoreQueryMode.HYBRID))
    with pytest.raises(ValueError, match="query_embedding must be a vector, got None"):
        store.query(VectorStoreQuery(query_str="apple"))
    with pytest.raises(ValueError, match="must have an embedding, got None"):
        store.add([TextNode(text="no vector")])
    with pytest.raises(ValueError, match="operator 'gt' on 'kind' needs a number or an ISO 8601 date"):
        store.query(VectorStoreQuery(query_embedding=q, filters=MetadataFilters(filters=[f("kind", "x",
                                                                                           FilterOperator.GT)])))
    assert len(store.get_nodes()) == 5


def test_delete_by_source_document_and_nodes(built):
    store, index = built
    index.delete_ref_doc("fruit-1", delete_from_docstore=True)
    assert "apple apple" not in retrieve(index, "apple")
    store.delete_nodes(filters=MetadataFilters(filters=[f("kind", "tree")]))
    assert sorted(n.get_content() for n in store.get_nodes()) == ["pear", "plum fig"]
    node_id = store.get_nodes()[0].node_id
    assert [n.node_id for n in store.get_nodes(node_ids=[node_id])] == [node_id]
    store.clear()
    assert store.get_nodes() == [] and retrieve(index, "pear") == []


def test_persist_through_storage_context_and_reload(tmp_path, built):
    store, index = built
    index.storage_context.persist(persist_dir=str(tmp_path))
    loaded = TurboannVectorStore.from_persist_dir(str(tmp_path))
    again = VectorStoreIndex.from_vector_store(loaded, embed_model=EMBED)
    assert retrieve(again, "elm pine", k=1) == ["elm pine"]
    assert retrieve(again, "oak", filters=MetadataFilters(filters=[f("kind", "fruit")]), k=3) == \
        retrieve(index, "oak", filters=MetadataFilters(filters=[f("kind", "fruit")]), k=3)
    assert (loaded.bits, loaded.metric) == (4, "cosine")


def test_crash_mid_persist_leaves_the_previous_save(tmp_path, built, monkeypatch):
    store, index = built
    store.persist(str(tmp_path / "s"))
    index.delete_ref_doc("fruit-2")
    from turboann import _files

    def crash(tmp, path):
        raise KeyboardInterrupt   # killed while moving the new documents file into place

    monkeypatch.setattr(_files, "move_into_place", crash)
    with pytest.raises(KeyboardInterrupt):
        store.persist(str(tmp_path / "s"))
    monkeypatch.undo()
    assert len(TurboannVectorStore.from_persist_path(str(tmp_path / "s")).get_nodes()) == 5
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(StoreFileError, match="holds no saved store"):
        TurboannVectorStore.from_persist_path(str(tmp_path / "nothing"))
