"""LangChain VectorStore over turboann: `pip install turboann[langchain]`.

    from turboann.integrations.langchain import TurboannVectorStore
    store = TurboannVectorStore(embedding=my_embeddings, bits=4)
    store.add_texts(["a cat", "a dog"], metadatas=[{"kind": "pet"}, {"kind": "pet"}])
    store.similarity_search("kitten", k=1, filter={"kind": "pet"})
    store.save("my-store"); store = TurboannVectorStore.load("my-store", embedding=my_embeddings)

Documents and metadata live in SQLite, vectors in a turboann Index (see
`turboann.integrations._documents`). Scores of `similarity_search_with_score`
are cosine similarities ("cosine", the default), inner products ("ip") or
Euclidean distances ("l2", smaller is nearer).

Filters: `{"field": value, ...}` (all must hold) or the operator form
`{"field": {"$gt": 3}}`, `{"$and": [...]}`, `{"$or": [...]}`, `{"$not": {...}}`
with $eq $ne $gt $gte $lt $lte $in $nin $exists; they become SQL over the
metadata (semantics in `turboann.integrations._filters`).
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Callable, Iterable, Sequence

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore
except ImportError as exc:   # pragma: no cover - depends on the extra
    raise ImportError("turboann.integrations.langchain needs langchain-core: pip install 'turboann[langchain]'") from exc

from . import _filters
from ._documents import IndexedDocuments, NewDocument, StoredDocument, StoreFileError

__all__ = ["TurboannVectorStore", "StoreFileError"]

_COMPARISONS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte", "$in": "in",
                "$nin": "nin", "$exists": "exists"}


class TurboannVectorStore(VectorStore):
    """A LangChain `VectorStore` whose vectors are TurboQuant codes of `bits` bits a coordinate.

    embedding: the LangChain `Embeddings` that embeds texts and queries.
    metric: "cosine" | "ip" | "l2". index_options: keyword arguments of
    `turboann.Index` (seed, center, layout, ...). rescore: searches re-score
    rescore * k candidates exactly from the stored embeddings (0: the codes'
    estimates only).
    """

    def __init__(self, embedding: Embeddings, *, bits: int = 4, metric: str = "cosine", rescore: int = 4,
                 **index_options: Any):
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a langchain_core Embeddings, got {type(embedding).__name__}")
        self._embedding = embedding
        self._documents = IndexedDocuments(bits=bits, metric=metric, index_options=index_options, rescore=rescore,
                                           framework={"store": "langchain"})

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writing ----------------------------------------------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                  **kwargs: Any) -> list[str]:
        """Embed and store texts; returns their ids (generated where absent; a stored id is replaced)."""
        _no_extra("add_texts", kwargs)
        texts, metadatas, ids = self._checked_batch(texts, metadatas, ids)
        vectors = self._embedding.embed_documents(texts) if texts else []
        return self._write(texts, metadatas, ids, vectors)

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        _no_extra("aadd_texts", kwargs)
        texts, metadatas, ids = self._checked_batch(texts, metadatas, ids)
        vectors = await self._embedding.aembed_documents(texts) if texts else []
        return await run_in_executor(None, self._write, texts, metadatas, ids, vectors)

    def _checked_batch(self, texts, metadatas, ids):
        if isinstance(texts, str):
            raise TypeError(f"texts must be an iterable of strings, got a single string {texts[:40]!r}")
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings, got {type(bad[0]).__name__} {bad[0]!r}")
        metadatas = [{} for _ in texts] if metadatas is None else list(metadatas)
        ids = [None] * len(texts) if ids is None else list(ids)
        for name, values in (("metadatas", metadatas), ("ids", ids)):
            if len(values) != len(texts):
                raise ValueError(f"{name} must have one entry per text ({len(texts)}), got {len(values)}")
        ids = [i if i else str(uuid.uuid4()) for i in ids]
        return texts, metadatas, ids

    def _write(self, texts, metadatas, ids, vectors) -> list[str]:
        if len(vectors) != len(texts):
            raise ValueError(f"the embedding model must return one vector per text ({len(texts)}), "
                             f"got {len(vectors)}")
        return self._documents.write([NewDocument(doc_id=i, text=t, metadata=m if m is not None else {}, embedding=v)
                                      for i, t, m, v in zip(ids, texts, metadatas, vectors)])

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id (absent ids are skipped); ids=None deletes every document."""
        _no_extra("delete", kwargs)
        if ids is None:
            self._documents.delete_matching(None)
        else:
            self._documents.delete(ids)
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        return await run_in_executor(None, self.delete, ids, **kwargs)

    # -- reading ----------------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ids, in the order asked; absent ids are skipped."""
        return [_document(d) for d in self._documents.get(ids)]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return await run_in_executor(None, self.get_by_ids, ids)

    def similarity_search(self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        _no_extra("similarity_search_with_score", kwargs)
        return self._scored(self._embedding.embed_query(query), k, filter)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: dict | None = None,
                                    **kwargs: Any) -> list[Document]:
        _no_extra("similarity_search_by_vector", kwargs)
        return [doc for doc, _ in self._scored(embedding, k, filter)]

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                               filter: dict | None = None) -> list[tuple[Document, float]]:
        return self._scored(embedding, k, filter)

    async def asimilarity_search(self, query: str, k: int = 4, filter: dict | None = None,
                                 **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter=filter, **kwargs)]

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: dict | None = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        _no_extra("asimilarity_search_with_score", kwargs)
        vector = await self._embedding.aembed_query(query)
        return await run_in_executor(None, self._scored, vector, k, filter)

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: dict | None = None,
                                           **kwargs: Any) -> list[Document]:
        _no_extra("asimilarity_search_by_vector", kwargs)
        return [doc for doc, _ in await run_in_executor(None, self._scored, embedding, k, filter)]

    def _scored(self, vector, k: int, filter: dict | None) -> list[tuple[Document, float]]:
        found = self._documents.search(vector, k, parse_filter(filter))
        return [(_document(d), self._score(d.score)) for d in found]

    def _score(self, score: float) -> float:
        return math.sqrt(max(score, 0.0)) if self._documents.metric == "l2" else score

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores mapped to [0, 1]: (1 + cosine) / 2, or LangChain's map of unit-vector Euclidean distance;
        inner products have no bounded map (NotImplementedError, as LangChain's default)."""
        metric = self._documents.metric
        if metric == "cosine":
            return lambda score: (1.0 + score) / 2.0
        if metric == "l2":
            return self._euclidean_relevance_score_fn
        raise NotImplementedError("metric 'ip' gives unbounded scores with no relevance map: use metric "
                                  "'cosine', or similarity_search_with_score")

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: dict | None = None, **kwargs: Any) -> list[Document]:
        """k of the fetch_k nearest, chosen for relevance and diversity (lambda_mult 1: relevance only)."""
        _no_extra("max_marginal_relevance_search", kwargs)
        return self.max_marginal_relevance_search_by_vector(self._embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter=filter)

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: dict | None = None,
                                                **kwargs: Any) -> list[Document]:
        _no_extra("max_marginal_relevance_search_by_vector", kwargs)
        found = self._documents.mmr_search(embedding, k, fetch_k, lambda_mult, parse_filter(filter))
        return [_document(d) for d in found]

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: dict | None = None,
                                             **kwargs: Any) -> list[Document]:
        _no_extra("amax_marginal_relevance_search", kwargs)
        vector = await self._embedding.aembed_query(query)
        return await run_in_executor(None, self.max_marginal_relevance_search_by_vector, vector, k, fetch_k,
                                     lambda_mult, filter)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5, filter: dict | None = None,
                                                       **kwargs: Any) -> list[Document]:
        _no_extra("amax_marginal_relevance_search_by_vector", kwargs)
        return await run_in_executor(None, self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k,
                                     lambda_mult, filter)

    # -- building, saving, loading -------------------------------------------------------------------------
    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> "TurboannVectorStore":
        """A new store (kwargs: bits, metric, rescore, index options) holding texts."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def save(self, directory) -> None:
        """Write the store into `directory`: atomic, a crash mid-save leaves the previous save loadable."""
        self._documents.save(directory)

    @classmethod
    def load(cls, directory, embedding: Embeddings) -> "TurboannVectorStore":
        """The store saved in `directory` (StoreFileError if it holds none, or another framework's)."""
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a langchain_core Embeddings, got {type(embedding).__name__}")
        documents = IndexedDocuments.load(directory)
        if documents.framework.get("store") != "langchain":
            documents.close()
            raise StoreFileError(f"{str(directory)!r} holds a {documents.framework.get('store')!r} store, "
                                 f"not a LangChain one")
        store = cls.__new__(cls)
        store._embedding, store._documents = embedding, documents
        return store

    def __len__(self) -> int:
        return self._documents.count()


def parse_filter(filter: dict | None):
    """The condition tree (`_filters`) of a LangChain-style metadata filter; ValueError for a malformed one."""
    if filter is None:
        return None
    if not isinstance(filter, dict):
        raise TypeError(f"filter must be a dict, got {type(filter).__name__} {filter!r}")
    parts = []
    for key, value in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError(f"filter {key} must be a list of filters, got {value!r}")
            inner = tuple(parse_filter(v) for v in value)
            parts.append(_filters.AllOf(inner) if key == "$and" else _filters.AnyOf(inner))
        elif key == "$not":
            if not isinstance(value, dict):
                raise ValueError(f"filter $not must hold one filter, got {value!r}")
            parts.append(_filters.Not(parse_filter(value)))
        elif key.startswith("$"):
            raise ValueError(f"filter operator {key!r} is unknown; use $and, $or, $not at the top, or "
                             f"{', '.join(_COMPARISONS)} on a field")
        else:
            parts.append(_field_filter(key, value))
    return parts[0] if len(parts) == 1 else _filters.AllOf(tuple(parts))


def _field_filter(key: str, value):
    field = _filters.Field.meta(key)
    if not (isinstance(value, dict) and value and all(isinstance(k, str) and k.startswith("$") for k in value)):
        return _filters.Compare(field, "eq", value)
    parts = []
    for op, operand in value.items():
        if op not in _COMPARISONS:
            raise ValueError(f"filter operator {op!r} on {key!r} is unknown; use one of {', '.join(_COMPARISONS)}")
        if op in ("$in", "$nin") and not isinstance(operand, (list, tuple, set)):
            raise ValueError(f"filter {op} on {key!r} needs a list, got {type(operand).__name__} {operand!r}")
        if op == "$exists" and not isinstance(operand, bool):
            raise ValueError(f"filter $exists on {key!r} needs True or False, got {operand!r}")
        parts.append(_filters.Compare(field, _COMPARISONS[op], list(operand) if isinstance(operand, set) else operand))
    return parts[0] if len(parts) == 1 else _filters.AllOf(tuple(parts))


def _document(stored: StoredDocument) -> Document:
    return Document(id=stored.doc_id, page_content=stored.text or "", metadata=stored.metadata)


def _no_extra(method: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
