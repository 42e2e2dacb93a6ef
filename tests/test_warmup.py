"""turboann.warmup: its argument checks (compiling every kernel takes minutes: bench/cold_start.py measures it)."""
import pytest

from turboann import warmup as w


@pytest.mark.parametrize("kwargs, error, message", [
    ({"bits": [0]}, ValueError, "bits must be >= 1, got 0"),
    ({"bits": [4, 9]}, ValueError, "bits must be <= 8, got 9"),
    ({"bits": [2.5]}, TypeError, "bits must be an integer, got float 2.5"),
    ({"bits": []}, ValueError, "at least one width"),
    ({"kinds": ["flat", "hnsw"]}, ValueError, "kinds must hold only 'flat', 'ivf', got 'hnsw'"),
    ({"kinds": []}, ValueError, "one kind in kinds"),
    ({"jobs": 0}, ValueError, "jobs must be >= 1, got 0"),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, error, message, monkeypatch):
    monkeypatch.setattr(w, "run_task", lambda *a: pytest.fail("ran a task"))
    with pytest.raises(error, match=message):
        w.warmup(**kwargs)
