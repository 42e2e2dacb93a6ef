"""LlamaIndex vector store over turboann: `pip install turboann[llama-index]`.

    from llama_index.core import StorageContext, VectorStoreIndex
    from turboann.integrations.llama_index import TurboannVectorStore
    store = TurboannVectorStore(bits=4)
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store))
    store.persist("my-store"); store = TurboannVectorStore.from_persist_path("my-store")

Nodes (text, metadata, their relationships) live in SQLite, embeddings in a
turboann Index (see `turboann.integrations._documents`); the store keeps the
text (stores_text), so the index needs no docstore for retrieval.

Similarities: cosine similarity ("cosine"), inner product ("ip"), or
1 / (1 + Euclidean distance) ("l2"): always higher for nearer, as LlamaIndex's
post-processors expect. Queries: modes "default" and "mmr"; MetadataFilters
with every FilterOperator and AND / OR / NOT (NOT: none of the filters holds,
as LlamaIndex's simple store reads it), plus doc_ids and node_ids.
"""
from __future__ import annotations

import math
import os
from typing import Any, List, Optional, Sequence

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode
    from llama_index.core.vector_stores.types import (BasePydanticVectorStore, FilterCondition, FilterOperator,
                                                      MetadataFilter, MetadataFilters, VectorStoreQuery,
                                                      VectorStoreQueryMode, VectorStoreQueryResult)
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as exc:   # pragma: no cover - depends on the extra
    raise ImportError("turboann.integrations.llama_index needs llama-index-core: "
                      "pip install 'turboann[llama-index]'") from exc

from . import _filters
from ._documents import IndexedDocuments, NewDocument, StoredDocument, StoreFileError

__all__ = ["TurboannVectorStore", "StoreFileError"]

_OPERATORS = {FilterOperator.EQ: "eq", FilterOperator.NE: "ne", FilterOperator.GT: "gt", FilterOperator.GTE: "gte",
              FilterOperator.LT: "lt", FilterOperator.LTE: "lte", FilterOperator.IN: "in", FilterOperator.NIN: "nin",
              FilterOperator.ANY: "any", FilterOperator.ALL: "all", FilterOperator.CONTAINS: "contains",
              FilterOperator.TEXT_MATCH: "text_match", FilterOperator.TEXT_MATCH_INSENSITIVE: "text_match_casefold",
              FilterOperator.IS_EMPTY: "is_empty"}
_DEFAULT_MMR_THRESHOLD = 0.5
# MMR picks among this many times similarity_top_k nearest nodes.
_MMR_FETCH = 4


class TurboannVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store whose embeddings are TurboQuant codes of `bits` bits a coordinate.

    metric: "cosine" | "ip" | "l2"; rescore and index_options (keyword
    arguments of `turboann.Index`): see `turboann.integrations.langchain`.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    bits: int = 4
    metric: str = "cosine"
    rescore: int = 4
    index_options: dict = {}
    _documents: IndexedDocuments = PrivateAttr()

    def __init__(self, bits: int = 4, metric: str = "cosine", rescore: int = 4, **index_options: Any):
        documents = IndexedDocuments(bits=bits, metric=metric, index_options=index_options, rescore=rescore,
                                     framework={"store": "llama_index"})
        super().__init__(bits=bits, metric=metric, rescore=rescore, index_options=index_options)
        self._documents = documents

    @classmethod
    def class_name(cls) -> str:
        return "TurboannVectorStore"

    @property
    def client(self) -> IndexedDocuments:
        """The documents-and-index engine under this store."""
        return self._documents

    # -- writing -----------------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        """Store nodes with their embeddings (a stored node id is replaced); returns the node ids."""
        if kwargs:
            raise TypeError(f"add() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        rows = []
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}] must be a llama_index BaseNode, got {type(node).__name__}")
            if node.embedding is None:
                raise ValueError(f"nodes[{i}] (id {node.node_id!r}) must have an embedding, got None: embed the "
                                 f"nodes first, as VectorStoreIndex does")
            rows.append(NewDocument(doc_id=node.node_id, text=node.get_content(), metadata=dict(node.metadata),
                                    embedding=node.embedding, source_id=node.ref_doc_id,
                                    extra=node_to_metadata_dict(node, remove_text=True, flat_metadata=False)))
        return self._documents.write(rows)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ref_doc_id."""
        if not isinstance(ref_doc_id, str):
            raise TypeError(f"ref_doc_id must be a string, got {type(ref_doc_id).__name__}")
        self._documents.delete_matching(_filters.Compare(_filters.Field(column="source_id"), "eq", ref_doc_id))

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes among node_ids (all when None) that the filters match."""
        self._documents.delete_matching(_condition(filters, node_ids=node_ids))

    def clear(self) -> None:
        self._documents.delete_matching(None)

    # -- reading -----------------------------------------------------------------------------------------
    def get_nodes(self, node_ids: Optional[List[str]] = None,
                  filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        """The nodes among node_ids (all when None) that the filters match."""
        if node_ids is not None and filters is None:
            return [_node(d) for d in self._documents.get(node_ids)]
        return [_node(d) for d in self._documents.select(_condition(filters, node_ids=node_ids))]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The similarity_top_k nodes nearest to query.query_embedding among those its filters,
        doc_ids and node_ids admit; mode "default" or "mmr" (query.mmr_threshold: 1 is pure relevance)."""
        if not isinstance(query, VectorStoreQuery):
            raise TypeError(f"query must be a VectorStoreQuery, got {type(query).__name__}")
        if query.query_embedding is None:
            raise ValueError("query.query_embedding must be a vector, got None: this store searches by embedding")
        condition = _condition(query.filters, node_ids=query.node_ids, doc_ids=query.doc_ids)
        k = query.similarity_top_k
        if query.mode == VectorStoreQueryMode.DEFAULT:
            found = self._documents.search(query.query_embedding, k, condition)
        elif query.mode == VectorStoreQueryMode.MMR:
            threshold = _DEFAULT_MMR_THRESHOLD if query.mmr_threshold is None else query.mmr_threshold
            found = self._documents.mmr_search(query.query_embedding, k, _MMR_FETCH * k, threshold, condition)
        else:
            raise ValueError(f"query.mode must be 'default' or 'mmr', got {query.mode.value!r}")
        return VectorStoreQueryResult(nodes=[_node(d) for d in found], similarities=[self._similarity(d.score)
                                                                                   for d in found],
                                      ids=[d.doc_id for d in found])

    def _similarity(self, score: float) -> float:
        return 1.0 / (1.0 + math.sqrt(max(score, 0.0))) if self._documents.metric == "l2" else score

    # -- persistence -------------------------------------------------------------------------------------
    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Save into the directory persist_path (StorageContext.persist passes
        PERSIST_DIR/default__vector_store.json: that name becomes the directory). Local files only."""
        _local_only(fs)
        self._documents.save(persist_path)

    @classmethod
    def from_persist_path(cls, persist_path: str, fs: Any = None) -> "TurboannVectorStore":
        """The store `persist` wrote into persist_path (StoreFileError if it holds none)."""
        _local_only(fs)
        documents = IndexedDocuments.load(persist_path)
        if documents.framework.get("store") != "llama_index":
            found = documents.framework.get("store")
            documents.close()
            raise StoreFileError(f"{str(persist_path)!r} holds a {found!r} store, not a LlamaIndex one")
        s = documents.settings
        store = cls.__new__(cls)
        BasePydanticVectorStore.__init__(store, bits=s["bits"], metric=s["metric"], rescore=s["rescore"],
                                         index_options=s["index_options"])
        store._documents = documents
        return store

    @classmethod
    def from_persist_dir(cls, persist_dir: str, namespace: str = "default", fs: Any = None) -> "TurboannVectorStore":
        """The store StorageContext.persist(persist_dir) saved (its vector store namespace `namespace`)."""
        return cls.from_persist_path(os.path.join(persist_dir, f"{namespace}__vector_store.json"), fs=fs)


def parse_filters(filters: Optional[MetadataFilters]):
    """The condition tree (`_filters`) of LlamaIndex MetadataFilters."""
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise TypeError(f"filters must be MetadataFilters, got {type(filters).__name__}")
    parts = tuple(parse_filters(f) if isinstance(f, MetadataFilters) else _leaf(f) for f in filters.filters)
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return _filters.AllOf(parts)
    if condition == FilterCondition.OR:
        return _filters.AnyOf(parts)
    return _filters.Not(_filters.AnyOf(parts))


def _leaf(f: MetadataFilter):
    if not isinstance(f, MetadataFilter):
        raise TypeError(f"filters must hold MetadataFilter or MetadataFilters, got {type(f).__name__}")
    return _filters.Compare(_filters.Field.meta(f.key), _OPERATORS[FilterOperator(f.operator)], f.value)


def _condition(filters, *, node_ids=None, doc_ids=None):
    """The condition of filters and node / source document ids. An empty id list restricts nothing, as
    in LlamaIndex's own stores: VectorStoreIndex.as_retriever passes its (for a store that keeps the
    text, empty) list of node ids."""
    parts = [] if filters is None else [parse_filters(filters)]
    for column, ids in (("doc_id", node_ids), ("source_id", doc_ids)):
        if ids:
            parts.append(_filters.Compare(_filters.Field(column=column), "in", list(ids)))
    if not parts:
        return None
    tree = parts[0] if len(parts) == 1 else _filters.AllOf(tuple(parts))
    _filters.where(tree)   # a bad value is refused before anything is read or deleted
    return tree


def _node(stored: StoredDocument) -> BaseNode:
    node = metadata_dict_to_node(stored.extra, text=stored.text)
    node.embedding = None
    return node


def _local_only(fs) -> None:
    if fs is not None and "file" not in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        raise ValueError(f"fs must be None or a local filesystem (the store writes SQLite files), got protocol "
                         f"{fs.protocol!r}")
