"""The engine under the framework stores: SQL filters, filtered search past the exact-scan size, and saves
that a crash (a real SIGKILL) cannot spoil."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from turboann.integrations import _filters as F
from turboann.integrations._documents import (EXACT_SCAN_ROWS, IndexedDocuments, NewDocument, StoreFileError,
                                              exact_scores)

M = F.Field.meta


@pytest.fixture()
def tagged():
    s = IndexedDocuments()
    s.write([NewDocument("a", "x", {"n": 1, "when": "2020-01-01T00:00:00", "flag": True}, [1.0, 0.0]),
             NewDocument("b", "y", {"n": 2.5, "when": "2021-06-01T12:00:00+02:00", "l": [1, "z"]}, [0.0, 1.0]),
             NewDocument("c", None, {"n": "2", "gone": None}, [1.0, 1.0]),
             NewDocument("d", "w", {}, None)])
    return s


def matching(store, condition):
    return [d.doc_id for d in store.select(condition)]


def test_filter_semantics(tagged):
    assert matching(tagged, F.Compare(M("n"), "eq", 2.5)) == ["b"]
    assert matching(tagged, F.Compare(M("n"), "eq", "2")) == ["c"]            # text is not a number
    assert matching(tagged, F.Compare(M("n"), "ne", 1)) == ["b", "c", "d"]    # missing fields included
    assert matching(tagged, F.Compare(M("gone"), "eq", None)) == ["a", "b", "c", "d"]
    assert matching(tagged, F.Compare(M("n"), "gt", None)) == []
    assert matching(tagged, F.Compare(M("n"), "gte", 1)) == ["a", "b"]
    assert matching(tagged, F.Compare(M("flag"), "eq", True)) == ["a"]
    assert matching(tagged, F.Compare(M("flag"), "eq", 1)) == []              # booleans equal booleans only
    assert matching(tagged, F.Compare(M("when"), "gt", "2021-06-01T11:00:00")) == []   # 12:00+02:00 is 10:00 UTC
    assert matching(tagged, F.Compare(M("when"), "lt", "2021-06-01T11:00:00")) == ["a", "b"]
    assert matching(tagged, F.Not(F.AllOf((F.Compare(M("n"), "eq", 1), F.Compare(M("flag"), "eq", True))))) == \
        ["b", "c", "d"]
    assert matching(tagged, F.Compare(M("l"), "eq", [1, "z"])) == ["b"]
    assert matching(tagged, F.Compare(M("l"), "contains", "z")) == ["b"]
    assert matching(tagged, F.Compare(F.Field(column="text"), "eq", None)) == ["c"]
    assert matching(tagged, F.Compare(M("n"), "in", [1, "2"])) == ["a", "c"]
    assert matching(tagged, F.AnyOf(())) == [] and matching(tagged, F.AllOf(())) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="operator 'lt' on 'n' needs a number or an ISO 8601 date, got str 'x'"):
        tagged.select(F.Compare(M("n"), "lt", "x"))
    with pytest.raises(ValueError, match="metadata keys must be non-empty strings"):
        M('a"b')


def test_search_skips_documents_without_vectors_and_checks_the_query(tagged):
    assert [d.doc_id for d in tagged.search([1.0, 0.2], 10)] == ["a", "c", "b"]
    with pytest.raises(ValueError, match=r"query must be a 1-D vector of shape \(2,\), got shape \(3,\)"):
        tagged.search([1.0, 0.0, 0.0], 1)
    with pytest.raises(ValueError, match="must not be all zeros under metric 'cosine'"):
        tagged.search([0.0, 0.0], 1)
    with pytest.raises(ValueError, match="must be finite"):
        tagged.write([NewDocument("e", "", {}, [np.nan, 1.0])])
    assert tagged.count() == 4 and len(tagged.index) == 3


@pytest.mark.parametrize("share", [0.5, 0.02])
def test_filtered_search_past_the_exact_scan_finds_the_true_neighbours(share):
    rng = np.random.default_rng(5)
    n = 3 * EXACT_SCAN_ROWS
    x = rng.standard_normal((n, 32))
    store = IndexedDocuments(bits=4, rescore=8)
    keep = rng.random(n) < share
    store.write([NewDocument(str(i), None, {"keep": bool(keep[i])}, x[i]) for i in range(n)])
    q = rng.standard_normal(32)
    found = [int(d.doc_id) for d in store.search(q, 10, F.Compare(M("keep"), "eq", True))]
    assert all(keep[found])
    scores = exact_scores("cosine", q, x)
    truth = np.flatnonzero(keep)[np.argsort(-scores[keep])[:10]]
    assert len(set(found) & set(truth.tolist())) >= 9


SAVER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from turboann import _files
    from turboann.integrations._documents import IndexedDocuments, NewDocument
    store = IndexedDocuments.load({path!r})
    store.write([NewDocument("new", "t", {{}}, [0.5, 0.5])])
    real = _files.{hook}
    def die(*args, **kwargs):
        if {when!r} == "after":
            real(*args, **kwargs)
        os.kill(os.getpid(), 9)
    _files.{hook} = die
    store.save({path!r})
""")


@pytest.mark.parametrize("hook, when", [("move_into_place", "before"), ("move_into_place", "after"),
                                        ("write_text", "before")])
def test_a_process_killed_mid_save_leaves_the_previous_pair(tmp_path, tagged, hook, when):
    path = tmp_path / "store"
    tagged.save(path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", SAVER.format(root=root, path=str(path), hook=hook, when=when)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    loaded = IndexedDocuments.load(path)
    assert [d.doc_id for d in loaded.select()] == ["a", "b", "c", "d"] and len(loaded.index) == 3
    loaded.write([NewDocument("e", "", {}, [1.0, 2.0])])
    loaded.save(path)            # the next save sweeps away what the killed one left
    assert sorted(p.name.split("-")[0] for p in path.iterdir()) == ["documents", "index", "manifest.json"]
    assert IndexedDocuments.load(path).count() == 5


def test_load_refuses_tampered_snapshots(tmp_path, tagged):
    path = tmp_path / "store"
    tagged.save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    index_file = path / manifest["index"]["file"]
    data = bytearray(index_file.read_bytes())
    data[-1] ^= 1
    index_file.write_bytes(bytes(data))
    with pytest.raises(StoreFileError, match="is not the index file that was saved"):
        IndexedDocuments.load(path)
    other = tmp_path / "other"
    tagged.save(other)
    theirs = json.loads((other / "manifest.json").read_text())
    # a documents file of another save, with the manifest's size and digest: the generation inside tells
    manifest["documents"] = theirs["documents"]
    os.replace(other / theirs["documents"]["file"], path / theirs["documents"]["file"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreFileError, match="belongs to another save"):
        IndexedDocuments.load(path)
    assert not (path / "documents.sqlite-wal").exists()


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="bits must be <= 8"):
        IndexedDocuments(bits=9)
    with pytest.raises(TypeError, match="index_options must not hold 'dim'"):
        IndexedDocuments(index_options={"dim": 3})
    with pytest.raises(ValueError, match="layout must be one of"):
        IndexedDocuments(index_options={"layout": "sideways"})
    with pytest.raises(ValueError, match="on_duplicate must be one of"):
        IndexedDocuments().write([], on_duplicate="merge")
