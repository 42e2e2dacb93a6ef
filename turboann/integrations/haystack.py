"""Haystack DocumentStore and embedding retriever over turboann: `pip install turboann[haystack]`.

    from turboann.integrations.haystack import TurboannDocumentStore, TurboannEmbeddingRetriever
    store = TurboannDocumentStore(bits=4, path="my-store")
    store.write_documents(embedded_documents)          # e.g. from a DocumentEmbedder
    TurboannEmbeddingRetriever(store, top_k=5).run(query_embedding=embedding)["documents"]
    store.save()                                       # TurboannDocumentStore(path="my-store") loads it again

Documents (content, meta, embedding kept as float64 so they come back equal
to what was written, blob, sparse embedding) live in SQLite, embeddings also
in a turboann Index (see `turboann.integrations._documents`). Documents without
an embedding are stored and filtered, never retrieved by embedding.

Filters: Haystack's syntax (comparisons on "meta.KEY", "id" or "content";
AND / OR / NOT), compiled to SQL; semantics in `turboann.integrations._filters`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.dataclasses import ByteStream, SparseEmbedding
    from haystack.document_stores.errors import DuplicateDocumentError
    from haystack.document_stores.types import DuplicatePolicy, FilterPolicy, apply_filter_policy
    from haystack.errors import FilterError
except ImportError as exc:   # pragma: no cover - depends on the extra
    raise ImportError("turboann.integrations.haystack needs haystack-ai: pip install 'turboann[haystack]'") from exc

from .. import _validate
from . import _filters
from ._documents import MANIFEST, DuplicateIdError, IndexedDocuments, NewDocument, StoredDocument, StoreFileError

__all__ = ["TurboannDocumentStore", "TurboannEmbeddingRetriever", "StoreFileError"]

_COMPARISONS = {"==": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "in": "in", "not in": "nin"}
_LOGIC = ("AND", "OR", "NOT")
_POLICIES = {DuplicatePolicy.NONE: "fail", DuplicatePolicy.FAIL: "fail", DuplicatePolicy.SKIP: "skip",
             DuplicatePolicy.OVERWRITE: "overwrite"}


class TurboannDocumentStore:
    """A Haystack document store whose embeddings are TurboQuant codes of `bits` bits a coordinate.

    metric: "cosine" | "ip" | "l2" (retrieval scores: cosine similarity,
    inner product, squared L2 distance). path: the directory `save()` writes
    to; when it already holds a saved store, the store starts from it (so
    `from_dict` of a saved store's `to_dict` finds its documents again).
    rescore, index_options: see `turboann.integrations.langchain.TurboannVectorStore`.
    """

    def __init__(self, *, bits: int = 4, metric: str = "cosine", path: str | None = None, rescore: int = 4,
                 **index_options: Any):
        if path is not None and not isinstance(path, (str, Path)):
            raise TypeError(f"path must be a directory path (str) or None, got {type(path).__name__}")
        self.path = None if path is None else str(path)
        self._init = {"bits": bits, "metric": metric, "rescore": rescore, **index_options}
        if self.path is not None and (Path(self.path) / MANIFEST).exists():
            self._documents = IndexedDocuments.load(self.path)
            if self._documents.framework.get("store") != "haystack":
                found = self._documents.framework.get("store")
                self._documents.close()
                raise StoreFileError(f"{self.path!r} holds a {found!r} store, not a Haystack one")
        else:
            self._documents = IndexedDocuments(bits=bits, metric=metric, index_options=index_options,
                                               embedding_dtype="float64", rescore=rescore,
                                               framework={"store": "haystack"})

    # -- the DocumentStore protocol -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, path=self.path, **self._init)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TurboannDocumentStore":
        return default_from_dict(cls, data)

    def count_documents(self) -> int:
        return self._documents.count()

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents the filters match (all without filters), in the order they were first written."""
        return [_document(d) for d in self._documents.select(parse_filters(filters))]

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Write documents; returns how many were written. NONE acts as FAIL; FAIL writes nothing when
        any id is already stored or repeated."""
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            bad = documents if not isinstance(documents, list) else next(d for d in documents
                                                                         if not isinstance(d, Document))
            raise ValueError(f"documents must be a list of haystack Document, got {type(bad).__name__} {bad!r:.60}")
        if not isinstance(policy, DuplicatePolicy):
            raise TypeError(f"policy must be a DuplicatePolicy, got {type(policy).__name__} {policy!r}")
        try:
            return len(self._documents.write([_new_document(d) for d in documents], on_duplicate=_POLICIES[policy]))
        except DuplicateIdError as exc:
            raise DuplicateDocumentError(str(exc)) from exc

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete documents by id; absent ids are skipped."""
        self._documents.delete(document_ids)

    # -- beyond the protocol --------------------------------------------------------------------------------
    def delete_all_documents(self) -> None:
        self._documents.delete_matching(None)

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Delete the documents the filters match; returns how many."""
        return self._documents.delete_matching(parse_filters(filters))

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        return self._documents.count(parse_filters(filters))

    def embedding_retrieval(self, query_embedding: list[float], filters: dict[str, Any] | None = None,
                            top_k: int = 10, scale_score: bool = False,
                            return_embedding: bool = False) -> list[Document]:
        """The top_k documents nearest to query_embedding among those the filters match, best first.

        scale_score maps scores into [0, 1] as Haystack's in-memory store
        does: (cosine + 1) / 2, the logistic of inner product / 100, and
        1 / (1 + distance) for l2.
        """
        top_k = _validate.integer("top_k", top_k, low=0)
        if top_k == 0:
            return []
        found = self._documents.search(query_embedding, top_k, parse_filters(filters))
        metric = self._documents.metric
        return [_document(d, with_embedding=return_embedding,
                          score=_scaled(metric, d.score) if scale_score else d.score) for d in found]

    def save(self, directory: str | None = None) -> None:
        """Write the store into `directory` (default: `path`); atomic, a crash leaves the previous save."""
        target = directory if directory is not None else self.path
        if target is None:
            raise ValueError("save needs a directory: give one, or build the store with path=..., got neither")
        self._documents.save(target)


@component
class TurboannEmbeddingRetriever:
    """Retrieves the documents nearest to a query embedding from a `TurboannDocumentStore`.

    filters, top_k, scale_score, return_embedding: defaults for `run`;
    filter_policy: REPLACE (run's filters replace these) or MERGE (both apply).
    """

    def __init__(self, document_store: TurboannDocumentStore, filters: dict[str, Any] | None = None, top_k: int = 10,
                 scale_score: bool = False, return_embedding: bool = False,
                 filter_policy: FilterPolicy = FilterPolicy.REPLACE):
        if not isinstance(document_store, TurboannDocumentStore):
            raise TypeError(f"document_store must be a TurboannDocumentStore, got {type(document_store).__name__}")
        self.document_store = document_store
        self.filters = filters
        self.top_k = _validate.integer("top_k", top_k, low=1)
        self.scale_score = scale_score
        self.return_embedding = return_embedding
        self.filter_policy = FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str) else filter_policy
        parse_filters(filters)   # a malformed default fails here, not at the first run

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, document_store=self.document_store.to_dict(), filters=self.filters,
                               top_k=self.top_k, scale_score=self.scale_score, return_embedding=self.return_embedding,
                               filter_policy=self.filter_policy.value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TurboannEmbeddingRetriever":
        params = data.get("init_parameters", {})
        params["document_store"] = TurboannDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query_embedding: list[float], filters: dict[str, Any] | None = None, top_k: int | None = None,
            scale_score: bool | None = None, return_embedding: bool | None = None) -> dict[str, list[Document]]:
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        return {"documents": self.document_store.embedding_retrieval(
            query_embedding, filters=filters, top_k=self.top_k if top_k is None else top_k,
            scale_score=self.scale_score if scale_score is None else scale_score,
            return_embedding=self.return_embedding if return_embedding is None else return_embedding)}


def parse_filters(filters: dict[str, Any] | None):
    """The condition tree (`_filters`) of Haystack filters; FilterError for a malformed one."""
    if not filters:
        return None
    tree = _parse(filters)
    try:
        _filters.where(tree)   # values are checked as the SQL is built: refuse now, not mid-query
    except (TypeError, ValueError) as exc:
        raise FilterError(str(exc)) from None
    return tree


def _parse(node):
    if not isinstance(node, dict):
        raise FilterError(f"a filter must be a dict, got {type(node).__name__} {node!r}")
    if "field" in node:
        missing = [key for key in ("operator", "value") if key not in node]
        if missing:
            raise FilterError(f"a comparison needs 'field', 'operator' and 'value', got no {missing[0]!r} in {node!r}")
        if node["operator"] not in _COMPARISONS:
            raise FilterError(f"a comparison's operator must be one of {', '.join(_COMPARISONS)}, "
                              f"got {node['operator']!r}")
        op, value = _COMPARISONS[node["operator"]], node["value"]
        if op in ("in", "nin") and not isinstance(value, list):
            raise FilterError(f"operator {node['operator']!r} needs a list, got {type(value).__name__} {value!r}")
        if op in _filters.ORDERING and isinstance(value, (list, dict)):
            raise FilterError(f"operator {node['operator']!r} cannot compare with a {type(value).__name__}")
        return _filters.Compare(_field(node["field"]), op, value)
    missing = [key for key in ("operator", "conditions") if key not in node]
    if missing:
        raise FilterError(f"a logical filter needs 'operator' and 'conditions', got no {missing[0]!r} in {node!r}")
    if node["operator"] not in _LOGIC:
        raise FilterError(f"a logical operator must be one of {', '.join(_LOGIC)}, got {node['operator']!r}")
    if not isinstance(node["conditions"], list):
        raise FilterError(f"'conditions' must be a list, got {type(node['conditions']).__name__}")
    parts = tuple(_parse(c) for c in node["conditions"])
    if node["operator"] == "OR":
        return _filters.AnyOf(parts)
    return _filters.AllOf(parts) if node["operator"] == "AND" else _filters.Not(_filters.AllOf(parts))


def _field(name) -> _filters.Field:
    if name == "id":
        return _filters.Field(column="doc_id")
    if name == "content":
        return _filters.Field(column="text")
    if isinstance(name, str) and name.startswith("meta.") and len(name) > 5:
        try:
            return _filters.Field.meta(*name[5:].split("."))
        except ValueError as exc:
            raise FilterError(str(exc)) from None
    raise FilterError(f"a filter's field must be 'id', 'content' or 'meta.KEY', got {name!r}")


def _new_document(doc: Document) -> NewDocument:
    extra = {}
    if doc.blob is not None:
        extra["blob"] = doc.blob.to_dict()
    if doc.sparse_embedding is not None:
        extra["sparse_embedding"] = doc.sparse_embedding.to_dict()
    return NewDocument(doc_id=doc.id, text=doc.content, metadata=doc.meta, embedding=doc.embedding,
                       extra=extra or None)


def _document(stored: StoredDocument, with_embedding: bool = True, score: float | None = None) -> Document:
    extra = stored.extra or {}
    blob = extra.get("blob")
    sparse = extra.get("sparse_embedding")
    return Document(id=stored.doc_id, content=stored.text, meta=stored.metadata,
                    embedding=stored.embedding.tolist() if with_embedding and stored.embedding is not None else None,
                    blob=ByteStream.from_dict(blob) if blob else None,
                    sparse_embedding=SparseEmbedding.from_dict(sparse) if sparse else None, score=score)


def _scaled(metric: str, score: float) -> float:
    if metric == "cosine":
        return (score + 1.0) / 2.0
    if metric == "ip":
        return 1.0 / (1.0 + math.exp(-score / 100.0))
    return 1.0 / (1.0 + score)
