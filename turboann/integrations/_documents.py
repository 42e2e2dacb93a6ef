"""Documents in SQLite, their vectors in a turboann Index: the engine under every framework's store.

Why SQLite: text, metadata and the frameworks' string ids are data a user
wants kept, queried and filtered, which the index (codes and int64 ids) is
not made for. Each document is one row of the `documents` table: its string
id, text, metadata as JSON, its embedding as a float blob (for exact
re-scoring, maximal marginal relevance, and frameworks that hand embeddings
back), and `vector_id`, the int64 id of its vector in the index.

The working database is a private temporary file in WAL mode, so documents
do not sit in RAM and a search's reads never wait on a write. Nothing is
written to a saved directory until `save`, which writes a snapshot:

    DIR/manifest.json            written last, atomically: names the pair below, their sizes and SHA-256
    DIR/documents-GEN.sqlite     the documents (journal mode DELETE: one self-contained file)
    DIR/index-GEN.tann           the index (turboann.io format), absent while no document has a vector

GEN is new at every save and is also written inside the SQLite file. Until
the new manifest replaces the old one (a rename), the old manifest still names
the old pair, whose files are removed only afterwards: a crash at any point of
a save leaves the previous pair loadable. `load` checks the manifest, both
files' sizes and digests, the generation inside the database and that the
index holds exactly the vectors the database says it does. One process saves
to a directory at a time.

Filtered searches: a filter is compiled to SQL (see `_filters`); when few rows
match, their stored embeddings are scored exactly (all of them: exact and
complete); otherwise the matching vector ids go to the index as its `filter=`,
which ranks only them (the unfiltered ranking restricted to those ids).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .. import _files, _validate
from ..index import Index
from ..io import IndexFileError
from ..io import load as _load_index
from . import _filters

FORMAT = "turboann-document-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ON_DUPLICATE = ("overwrite", "skip", "fail")
EMBEDDING_DTYPES = ("float32", "float64")
# A filter matching at most this many rows is answered by scoring their stored embeddings exactly.
EXACT_SCAN_ROWS = 4096
# Ids bound in one SQL statement (SQLite allows 32766 variables).
_CHUNK = 4096
_GENERATION = re.compile(r"[0-9a-f]{16}")
_SNAPSHOT_FILE = re.compile(r"(?:documents-([0-9a-f]{16})\.sqlite|index-([0-9a-f]{16})\.tann|"
                            r"\.documents-([0-9a-f]{16})\.sqlite\.tmp)")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    vector_id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL UNIQUE,
    source_id TEXT,
    text TEXT,
    metadata TEXT NOT NULL,
    embedding BLOB,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS documents_source_id ON documents(source_id);
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "vector_id, doc_id, source_id, text, metadata, embedding, extra"


class StoreFileError(ValueError):
    """A saved store directory is missing, incomplete, corrupt or of another format."""


class DuplicateIdError(ValueError):
    """Documents with ids already stored (or repeated in one call) were written with on_duplicate='fail'."""

    def __init__(self, doc_ids: list[str]):
        self.doc_ids = doc_ids
        shown = ", ".join(map(repr, doc_ids[:5])) + (" ..." if len(doc_ids) > 5 else "")
        super().__init__(f"documents must have new ids with on_duplicate='fail', got {len(doc_ids)} "
                         f"already stored or repeated: {shown}")


@dataclass
class NewDocument:
    """A document to write. embedding None: stored and filterable, never returned by a vector search."""
    doc_id: str
    text: str | None = None
    metadata: dict = field(default_factory=dict)
    embedding: Any = None
    source_id: str | None = None
    extra: dict | None = None


@dataclass
class StoredDocument:
    """A document read back; score is set by searches (the metric's: see `IndexedDocuments.search`)."""
    doc_id: str
    text: str | None
    metadata: dict
    embedding: np.ndarray | None
    source_id: str | None
    extra: dict | None
    vector_id: int
    score: float | None = None


class IndexedDocuments:
    """Documents in a working SQLite database and their vectors in a turboann `Index`; thread-safe.

    bits, metric and index_options (keyword arguments of `turboann.Index`)
    build the index when the first embedding arrives (its length is the dim).
    embedding_dtype: how stored embeddings are kept ("float64" hands back
    exactly what was written). rescore: searches take rescore * k candidates
    from the index and re-score them exactly from the stored embeddings (0:
    return the index's estimates of the first k).
    """

    def __init__(self, *, bits: int = 4, metric: str = "cosine", index_options: dict | None = None,
                 embedding_dtype: str = "float32", rescore: int = 4, framework: dict | None = None):
        self._settings = _check_settings(bits, metric, index_options, embedding_dtype, rescore, framework)
        self._lock = threading.RLock()
        self._index: Index | None = None
        self._open_working_database()
        self._put_info("settings", self._settings)

    # -- the working database -------------------------------------------------------------------------
    def _open_working_database(self) -> None:
        self._workdir = tempfile.mkdtemp(prefix="turboann-documents-")
        conn = sqlite3.connect(os.path.join(self._workdir, "documents.sqlite"), isolation_level=None,
                               check_same_thread=False)
        self._conn = conn
        self._closer = weakref.finalize(self, _close_working_database, conn, self._workdir)
        conn.create_function("casefold", 1, _filters.casefold, deterministic=True)
        conn.executescript(_SCHEMA)
        self._wal()

    def _wal(self) -> None:
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":   # pragma: no cover - every local filesystem supports WAL
            raise OSError(f"the working database must run in WAL mode, got journal mode {mode!r}")
        self._conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        """Close the working database and remove it (saved directories are untouched)."""
        self._closer()

    def _put_info(self, key: str, value) -> None:
        self._conn.execute("INSERT OR REPLACE INTO store_info (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- properties -------------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        return self._settings["metric"]

    @property
    def bits(self) -> int:
        return self._settings["bits"]

    @property
    def dim(self) -> int | None:
        """Length of the embeddings, None until the first one is written."""
        return self._settings["dim"]

    @property
    def settings(self) -> dict:
        """bits, metric, index_options, embedding_dtype, rescore, framework and dim, as saved (a copy)."""
        return json.loads(json.dumps(self._settings))

    @property
    def framework(self) -> dict:
        """Settings of the framework's store, saved and loaded with the documents (a copy)."""
        return json.loads(json.dumps(self._settings["framework"]))

    @property
    def index(self) -> Index | None:
        """The turboann index of the embeddings (None before the first one)."""
        return self._index

    def higher_is_better(self) -> bool:
        """Whether scores are similarities (ip, cosine) rather than squared distances (l2)."""
        return self.metric != "l2"

    # -- writing ------------------------------------------------------------------------------------------
    def write(self, documents: Sequence[NewDocument], *, on_duplicate: str = "overwrite") -> list[str]:
        """Store documents; returns the ids written, in order.

        on_duplicate: for an id already stored or repeated in the call,
        "overwrite" replaces it (the last of repeats wins), "skip" keeps what
        is stored (the first of repeats), "fail" raises DuplicateIdError and
        writes nothing. Any error leaves the store as it was.
        """
        _validate.choice("on_duplicate", on_duplicate, ON_DUPLICATE)
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a sequence of NewDocument, got {type(documents).__name__}")
        rows = [self._checked(i, doc) for i, doc in enumerate(documents)]
        with self._lock:
            rows = self._dedup(rows, on_duplicate)
            dims = {len(r[4]) // np.dtype(self._settings["embedding_dtype"]).itemsize
                    for r in rows if r[4] is not None}
            self._check_dims(dims)
            return self._commit(rows)

    def _checked(self, i: int, doc) -> tuple:
        """(doc_id, source_id, text, metadata JSON, embedding blob or None, extra JSON or None) of documents[i]."""
        if not isinstance(doc, NewDocument):
            raise TypeError(f"documents[{i}] must be a NewDocument, got {type(doc).__name__}")
        if not isinstance(doc.doc_id, str) or not doc.doc_id:
            raise ValueError(f"documents[{i}].doc_id must be a non-empty string, got {doc.doc_id!r}")
        if doc.text is not None and not isinstance(doc.text, str):
            raise TypeError(f"documents[{i}].text must be a string or None, got {type(doc.text).__name__}")
        if doc.source_id is not None and not isinstance(doc.source_id, str):
            raise TypeError(f"documents[{i}].source_id must be a string or None, got {type(doc.source_id).__name__}")
        if not isinstance(doc.metadata, dict):
            raise TypeError(f"documents[{i}].metadata must be a dict, got {type(doc.metadata).__name__}")
        metadata = _json_text(f"documents[{i}].metadata", doc.metadata)
        extra = None if doc.extra is None else _json_text(f"documents[{i}].extra", doc.extra)
        blob = None if doc.embedding is None else self._embedding_blob(f"documents[{i}].embedding", doc.embedding)
        return doc.doc_id, doc.source_id, doc.text, metadata, blob, extra

    def _embedding_blob(self, name: str, embedding) -> bytes:
        vector = self.checked_vector(name, embedding, dim=None)
        return vector.astype(self._settings["embedding_dtype"]).tobytes()

    def checked_vector(self, name: str, vector, dim: int | None = -1) -> np.ndarray:
        """`vector` as a finite float64 (dim,) array (dim -1: the store's, None: any), nonzero under cosine."""
        arr = _validate.real_array(name, vector)
        dim = self.dim if dim == -1 else dim
        if arr.ndim != 1 or arr.shape[0] < 2 or (dim is not None and arr.shape[0] != dim):
            want = f"({dim},)" if dim is not None else "(dim,) with dim >= 2"
            raise ValueError(f"{name} must be a 1-D vector of shape {want}, got shape {arr.shape}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite, got NaN or inf at position {int(np.flatnonzero(~np.isfinite(arr))[0])}")
        if self.metric == "cosine" and not arr.any():
            raise ValueError(f"{name} must not be all zeros under metric 'cosine' (it has no direction)")
        return arr

    def _check_dims(self, dims: set) -> None:
        known = {self.dim} if self.dim is not None else set()
        if len(dims | known) > 1:
            raise ValueError(f"embeddings must all have the store's length "
                             f"{self.dim if self.dim is not None else 'of the first one'}, got lengths "
                             f"{', '.join(map(str, sorted(dims | known)))}")

    def _dedup(self, rows: list[tuple], on_duplicate: str) -> list[tuple]:
        """rows with repeats and (for skip) stored ids dropped; DuplicateIdError for fail."""
        ids = [r[0] for r in rows]
        stored = self._stored_ids(ids)
        if on_duplicate == "fail":
            repeated = [i for i, n in Counter(ids).items() if n > 1]
            clashes = list(dict.fromkeys([i for i in ids if i in stored] + repeated))
            if clashes:
                raise DuplicateIdError(clashes)
            return rows
        if on_duplicate == "skip":
            first: dict = {}
            for r in rows:
                if r[0] not in stored:
                    first.setdefault(r[0], r)
            return list(first.values())
        last = {r[0]: r for r in rows}
        return list(last.values())

    def _stored_ids(self, doc_ids: list[str]) -> set[str]:
        found: set = set()
        for part in _chunks(list(dict.fromkeys(doc_ids))):
            found.update(r[0] for r in self._conn.execute(
                f"SELECT doc_id FROM documents WHERE doc_id IN ({_marks(part)})", part))
        return found

    def _commit(self, rows: list[tuple]) -> list[str]:
        """Replace or insert rows in one transaction, and their vectors in the index; all or nothing."""
        if not rows:
            return []
        conn, dtype = self._conn, self._settings["embedding_dtype"]
        created = added = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            replaced = self._vector_ids_of([r[0] for r in rows], with_embedding=True)
            for part in _chunks([r[0] for r in rows]):
                conn.execute(f"DELETE FROM documents WHERE doc_id IN ({_marks(part)})", part)
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'documents'").fetchone()
            first = (seq[0] if seq else 0) + 1
            vector_ids = np.arange(first, first + len(rows), dtype=np.int64)
            conn.executemany(f"INSERT INTO documents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(int(v), *r) for v, r in zip(vector_ids, rows)])
            with_vectors = [j for j, r in enumerate(rows) if r[4] is not None]
            if with_vectors:
                x = np.stack([np.frombuffer(rows[j][4], dtype) for j in with_vectors])
                if self._index is None:
                    created = self._index = self._new_index(x.shape[1])
                added = vector_ids[with_vectors]
                self._index.add(x, ids=added)
                if created is not None:
                    self._settings["dim"] = int(x.shape[1])
                    self._put_info("settings", self._settings)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            if created is not None:
                self._index = None
                self._settings["dim"] = None
            elif added is not None:
                self._index.remove(added, missing="ignore")
            raise
        if replaced.size:
            self._index.remove(replaced)
        return [r[0] for r in rows]

    def _new_index(self, dim: int) -> Index:
        s = self._settings
        return Index(dim, s["bits"], s["metric"], **s["index_options"])

    def _vector_ids_of(self, doc_ids: list[str], *, with_embedding: bool) -> np.ndarray:
        out: list[int] = []
        extra = " AND embedding IS NOT NULL" if with_embedding else ""
        for part in _chunks(list(dict.fromkeys(doc_ids))):
            out += [r[0] for r in self._conn.execute(
                f"SELECT vector_id FROM documents WHERE doc_id IN ({_marks(part)}){extra}", part)]
        return np.array(out, np.int64)

    # -- deleting -------------------------------------------------------------------------------------------
    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete the stored ones among doc_ids; returns how many were deleted (absent ids are skipped)."""
        doc_ids = _string_list("doc_ids", doc_ids)
        with self._lock:
            return self._delete_where_ids(doc_ids)

    def delete_matching(self, condition) -> int:
        """Delete every document `condition` matches (None: all); returns how many."""
        sql, params = _filters.where(condition)
        with self._lock:
            ids = [r[0] for r in self._conn.execute(f"SELECT doc_id FROM documents WHERE {sql}", params)]
            return self._delete_where_ids(ids)

    def _delete_where_ids(self, doc_ids: list[str]) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            vectors = self._vector_ids_of(doc_ids, with_embedding=True)
            deleted = 0
            for part in _chunks(list(dict.fromkeys(doc_ids))):
                deleted += conn.execute(f"DELETE FROM documents WHERE doc_id IN ({_marks(part)})", part).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if vectors.size:
            self._index.remove(vectors)
        return deleted

    # -- reading --------------------------------------------------------------------------------------------
    def get(self, doc_ids: Iterable[str]) -> list[StoredDocument]:
        """The stored documents among doc_ids, in the order asked (absent ids skipped, repeats once)."""
        doc_ids = list(dict.fromkeys(_string_list("doc_ids", doc_ids)))
        with self._lock:
            found = {}
            for part in _chunks(doc_ids):
                for row in self._conn.execute(f"SELECT {_COLUMNS} FROM documents WHERE doc_id IN ({_marks(part)})",
                                              part):
                    found[row[1]] = self._document(row)
        return [found[i] for i in doc_ids if i in found]

    def select(self, condition=None, *, limit: int | None = None) -> list[StoredDocument]:
        """Documents `condition` matches (None: all), in the order they were first written."""
        sql, params = _filters.where(condition)
        if limit is not None:
            sql += f" ORDER BY vector_id LIMIT {_validate.integer('limit', limit, low=0)}"
        else:
            sql += " ORDER BY vector_id"
        with self._lock:
            return [self._document(r) for r in self._conn.execute(f"SELECT {_COLUMNS} FROM documents WHERE {sql}",
                                                                   params)]

    def count(self, condition=None) -> int:
        sql, params = _filters.where(condition)
        with self._lock:
            return self._conn.execute(f"SELECT count(*) FROM documents WHERE {sql}", params).fetchone()[0]

    def _document(self, row) -> StoredDocument:
        vector_id, doc_id, source_id, text, metadata, blob, extra = row
        embedding = None if blob is None else np.frombuffer(blob, self._settings["embedding_dtype"]).copy()
        return StoredDocument(doc_id, text, json.loads(metadata), embedding, source_id,
                              None if extra is None else json.loads(extra), vector_id)

    def _by_vector_ids(self, vector_ids: np.ndarray) -> dict[int, StoredDocument]:
        found = {}
        for part in _chunks([int(v) for v in vector_ids]):
            for row in self._conn.execute(f"SELECT {_COLUMNS} FROM documents WHERE vector_id IN ({_marks(part)})",
                                          part):
                found[row[0]] = self._document(row)
        return found

    # -- searching ------------------------------------------------------------------------------------------
    def search(self, query, k: int, condition=None) -> list[StoredDocument]:
        """The k documents with embeddings nearest to query (a (dim,) vector) among those condition matches.

        Best first, each with `score`: cosine similarity ("cosine"), inner
        product ("ip") or squared L2 distance ("l2", ascending); exact from the
        stored embeddings unless rescore=0 and no filter is given.
        """
        k = _validate.integer("k", k, low=1)
        with self._lock:
            if self._index is None or len(self._index) == 0:
                if self.dim is not None:
                    self.checked_vector("query", query)
                return []
            q = self.checked_vector("query", query)
            return self._search(q, k, condition)

    def _search(self, q: np.ndarray, k: int, condition) -> list[StoredDocument]:
        rescore = self._settings["rescore"]
        shortlist = k * max(rescore, 1)
        if condition is None:
            D, I = self._index.search(q, min(shortlist, len(self._index)))
            I, D = I[0][I[0] >= 0], D[0][I[0] >= 0]
        else:
            I, D = self._filtered_candidates(q, shortlist, condition)
            if I is None:   # the matching rows were few: scored exactly, all of them
                return D[:k]
        found = self._by_vector_ids(I)
        docs = [found[int(v)] for v in I]
        if rescore or condition is not None:
            return self._ranked_exactly(q, docs)[:k]
        for doc, score in zip(docs, D):
            doc.score = float(score)
        return docs[:k]

    def _filtered_candidates(self, q: np.ndarray, shortlist: int, condition):
        """(vector ids, None) of up to `shortlist` index results that match condition, or (None, ranked
        documents) when so few rows match that all of them were scored exactly."""
        sql, params = _filters.where(condition)
        matching = np.fromiter((r[0] for r in self._conn.execute(
            f"SELECT vector_id FROM documents WHERE embedding IS NOT NULL AND ({sql})", params)), np.int64)
        if matching.size <= max(EXACT_SCAN_ROWS, shortlist):
            docs = list(self._by_vector_ids(matching).values())
            return None, self._ranked_exactly(q, docs)
        _, I = self._index.search(q, min(shortlist, matching.size), filter=matching)
        return I[0][I[0] >= 0], None

    def _ranked_exactly(self, q: np.ndarray, docs: list[StoredDocument]) -> list[StoredDocument]:
        if not docs:
            return []
        scores = exact_scores(self.metric, q, np.stack([d.embedding for d in docs]).astype(np.float64))
        order = np.argsort(-scores if self.higher_is_better() else scores, kind="stable")
        for j in order:
            docs[j].score = float(scores[j])
        return [docs[j] for j in order]

    def mmr_search(self, query, k: int, fetch_k: int, lambda_mult: float, condition=None) -> list[StoredDocument]:
        """Maximal marginal relevance: k of the fetch_k nearest, each chosen for lambda_mult * similarity
        to the query minus (1 - lambda_mult) * its largest similarity to those already chosen (cosine
        similarities of the stored embeddings, whatever the metric); scores as `search` gives them."""
        k = _validate.integer("k", k, low=1)
        fetch_k = _validate.integer("fetch_k", fetch_k, low=1)
        if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float)) or not 0 <= lambda_mult <= 1:
            raise ValueError(f"lambda_mult must be a number in [0, 1], got {lambda_mult!r}")
        with self._lock:
            if self._index is None or len(self._index) == 0:
                return []
            q = self.checked_vector("query", query)
            candidates = self._search(q, max(k, fetch_k), condition)
        if not candidates:
            return []
        chosen = mmr_order(q, np.stack([d.embedding for d in candidates]).astype(np.float64), k, float(lambda_mult))
        return [candidates[j] for j in chosen]

    # -- saving and loading -----------------------------------------------------------------------------------
    def set_framework(self, framework: dict) -> None:
        """Replace the framework's settings (JSON-serialisable dict) kept with the store."""
        _json_text("framework", framework)
        with self._lock:
            self._settings["framework"] = json.loads(json.dumps(framework))
            self._put_info("settings", self._settings)

    def save(self, directory) -> None:
        """Write a snapshot of the store into `directory` (created if needed); see the module docstring."""
        directory = Path(os.fspath(directory))
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            generation = secrets.token_hex(8)
            documents = directory / f"documents-{generation}.sqlite"
            tmp = directory / f".documents-{generation}.sqlite.tmp"
            try:
                dest = sqlite3.connect(tmp, isolation_level=None)
                try:
                    self._conn.backup(dest)
                    dest.execute("PRAGMA journal_mode=DELETE")
                    dest.execute("INSERT OR REPLACE INTO store_info (key, value) VALUES ('generation', ?)",
                                 (json.dumps(generation),))
                finally:
                    dest.close()
                _files.move_into_place(tmp, documents)
            finally:
                if tmp.exists():
                    tmp.unlink()
            index = None
            if self._index is not None:
                index = directory / f"index-{generation}.tann"
                self._index.save(index)
            manifest = {"format": FORMAT, "version": FORMAT_VERSION, "generation": generation,
                        "documents": _file_entry(documents), "index": index and _file_entry(index),
                        "document_count": self.count(),
                        "vector_count": 0 if self._index is None else len(self._index)}
            _files.write_text(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        _remove_other_generations(directory, generation)

    @classmethod
    def load(cls, directory) -> "IndexedDocuments":
        """A store holding the snapshot in `directory` (which is only read); StoreFileError if it is not one."""
        directory = Path(os.fspath(directory))
        manifest = _read_manifest(directory)
        store = cls.__new__(cls)
        store._lock = threading.RLock()
        store._index = None
        store._open_working_database()
        try:
            store._restore(directory, manifest)
        except BaseException:
            store.close()
            raise
        return store

    def _restore(self, directory: Path, manifest: dict) -> None:
        documents = _checked_file(directory, manifest["documents"], "documents")
        try:
            src = sqlite3.connect(f"{documents.resolve().as_uri()}?mode=ro", uri=True)
            try:
                src.backup(self._conn)
            finally:
                src.close()
            self._wal()
            info = dict(self._conn.execute("SELECT key, value FROM store_info"))
            columns = [r[1] for r in self._conn.execute("PRAGMA table_info(documents)")]
        except sqlite3.DatabaseError as exc:
            raise StoreFileError(f"{str(documents)!r} is not a readable SQLite database: {exc}") from None
        if columns != [c.strip() for c in _COLUMNS.split(",")] or "settings" not in info:
            raise StoreFileError(f"{str(documents)!r} does not hold a turboann document store's tables")
        if json.loads(info.get("generation", "null")) != manifest["generation"]:
            raise StoreFileError(f"{str(documents)!r} belongs to another save than the manifest's "
                                 f"(generation {info.get('generation')} against {manifest['generation']!r})")
        settings = json.loads(info["settings"])
        try:
            self._settings = _check_settings(settings["bits"], settings["metric"], settings["index_options"],
                                             settings["embedding_dtype"], settings["rescore"], settings["framework"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreFileError(f"{str(documents)!r} holds invalid store settings: {exc}") from None
        self._settings["dim"] = settings.get("dim")
        expected = np.fromiter((r[0] for r in self._conn.execute(
            "SELECT vector_id FROM documents WHERE embedding IS NOT NULL ORDER BY vector_id")), np.int64)
        if manifest["index"] is None:
            if expected.size:
                raise StoreFileError(f"{str(directory)!r}: the manifest names no index file, but "
                                     f"{expected.size} documents have embeddings")
            return
        path = _checked_file(directory, manifest["index"], "index")
        try:
            index = _load_index(path)
        except IndexFileError as exc:
            raise StoreFileError(f"{str(path)!r} is not a readable index: {exc}") from None
        if (not isinstance(index, Index) or index.dim != self.dim or index.metric != self.metric
                or index.bits != self.bits):
            raise StoreFileError(f"{str(path)!r} does not match the store's settings (dim {self.dim}, "
                                 f"metric {self.metric!r}, bits {self.bits})")
        if not np.array_equal(np.sort(index.ids), expected):
            raise StoreFileError(f"{str(path)!r} holds {len(index)} vectors, which are not those of the "
                                 f"{expected.size} documents with embeddings")
        self._index = index


def exact_scores(metric: str, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Scores of rows x (m, dim) against q (dim,): cosine similarity, inner product, or squared L2 distance."""
    if metric == "l2":
        return ((x - q) ** 2).sum(axis=1)
    scores = x @ q
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(q)
        scores = np.divide(scores, norms, out=np.zeros_like(scores), where=norms > 0)
    return scores


def mmr_order(q: np.ndarray, x: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Rows of x chosen by maximal marginal relevance, in the order chosen (see `mmr_search`)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    relevance = unit @ (q / max(np.linalg.norm(q), 1e-30))
    chosen = [int(np.argmax(relevance))]
    redundancy = unit @ unit[chosen[0]]
    while len(chosen) < min(k, x.shape[0]):
        score = lambda_mult * relevance - (1 - lambda_mult) * redundancy
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        redundancy = np.maximum(redundancy, unit @ unit[best])
    return chosen


# -- helpers ------------------------------------------------------------------------------------------------

def _check_settings(bits, metric, index_options, embedding_dtype, rescore, framework) -> dict:
    bits = _validate.integer("bits", bits, low=1, high=8)
    metric = _validate.choice("metric", metric, _validate.METRICS)
    index_options = dict(index_options or {})
    for reserved in ("dim", "bits", "metric"):
        if reserved in index_options:
            raise TypeError(f"index_options must not hold {reserved!r}: give it as its own argument")
    _json_text("index_options", index_options)
    Index(64, bits, metric, **index_options)   # a bad option fails here, not at the first write
    embedding_dtype = _validate.choice("embedding_dtype", embedding_dtype, EMBEDDING_DTYPES)
    rescore = _validate.integer("rescore", rescore, low=0)
    framework = {} if framework is None else framework
    _json_text("framework", framework)
    return {"bits": bits, "metric": metric, "index_options": index_options, "embedding_dtype": embedding_dtype,
            "rescore": rescore, "framework": json.loads(json.dumps(framework)), "dim": None}


def _json_text(name: str, value) -> str:
    try:
        return _filters.canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable (str, number, bool, None, list, dict with str keys; "
                        f"no NaN), got {type(value).__name__}: {exc}") from None


def _string_list(name: str, values) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, got a single {type(values).__name__} {values!r}")
    values = list(values)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name} must be a list of strings, got {type(bad[0]).__name__} {bad[0]!r}")
    return values


def _chunks(values: list) -> Iterable[list]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _marks(part: list) -> str:
    return ",".join("?" * len(part))


def _close_working_database(conn: sqlite3.Connection, workdir: str) -> None:
    conn.close()
    shutil.rmtree(workdir, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreFileError(f"{str(directory)!r} holds no saved store (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreFileError(f"{str(path)!r} is not a readable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreFileError(f"{str(path)!r} is not a turboann document store manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise StoreFileError(f"{str(path)!r} has format version {manifest.get('version')!r}, this turboann "
                             f"reads version {FORMAT_VERSION}")
    generation = manifest.get("generation")
    if not isinstance(generation, str) or not _GENERATION.fullmatch(generation) or "documents" not in manifest \
            or "index" not in manifest:
        raise StoreFileError(f"{str(path)!r} is incomplete or corrupt")
    return manifest


def _checked_file(directory: Path, entry, what: str) -> Path:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"] \
            or not _SNAPSHOT_FILE.fullmatch(entry["file"]):
        raise StoreFileError(f"{str(directory / MANIFEST)!r} names no valid {what} file: {entry!r}")
    path = directory / entry["file"]
    if not path.is_file():
        raise StoreFileError(f"{str(path)!r}, the {what} file the manifest names, is missing")
    if path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
        raise StoreFileError(f"{str(path)!r} is not the {what} file that was saved (size or SHA-256 differ)")
    return path


def _remove_other_generations(directory: Path, keep: str) -> None:
    """Remove the snapshot files of earlier saves (best effort: a file that cannot be removed stays)."""
    for name in os.listdir(directory):
        match = _SNAPSHOT_FILE.fullmatch(name)
        if match and keep not in match.groups():
            try:
                os.unlink(directory / name)
            except OSError:
                pass
