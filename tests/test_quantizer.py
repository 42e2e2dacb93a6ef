import numpy as np
import pytest

import turboann as ta


def unit_rows(n, dim, seed):
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("bits,expected", [(1, 0.3634), (2, 0.1175), (3, 0.0345), (4, 0.0095)])
def test_mse_distortion_on_unit_vectors(bits, expected):
    x = unit_rows(4000, 256, seed=bits)
    q = ta.TurboQuantMSE(256, bits, seed=3)
    err = ((q.decode(q.encode(x)) - x) ** 2).sum(axis=1).mean()
    assert abs(err - expected) / expected < 0.03, err


def test_decode_restores_norms_and_encode_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 50)).astype(np.float32) * 7
    q1, q2 = ta.TurboQuantMSE(50, 4, seed=11), ta.TurboQuantMSE(50, 4, seed=11)
    e1, e2 = q1.encode(x), q2.encode(x.astype(np.float64))   # any float dtype, converted once
    np.testing.assert_array_equal(e1.codes, e2.codes)
    np.testing.assert_allclose(e1.norms, np.linalg.norm(x, axis=1), rtol=1e-5)
    xh = q1.decode(e1)
    assert xh.dtype == np.float32 and xh.shape == x.shape
    rel = ((xh - x) ** 2).sum(1) / (x ** 2).sum(1)
    assert rel.mean() < 0.02
    e3 = ta.TurboQuantMSE(50, 4, seed=12).encode(x)
    assert not np.array_equal(e1.codes, e3.codes)
    assert e1.codes.shape == (200, 25) and e1.codes.dtype == np.uint8


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_prod_is_unbiased_over_seeds(bits):
    """E_seed <y, decode(encode(x))> == <y, x>: mean error within 4 standard errors over 30 seeds."""
    dim = 64
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((8, dim)).astype(np.float32)
    y = rng.standard_normal((8, dim)).astype(np.float32)
    true = (x * y).sum(1)
    est = []
    for seed in range(30):
        p = ta.TurboQuantProd(dim, bits, seed=seed)
        est.append((p.decode(p.encode(x)) * y).sum(1))
    est = np.array(est)                                   # (30, 8)
    err = est.mean(0) - true
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    assert (np.abs(err) <= 4 * se).all(), (err, se)
    # the MSE quantizer at the same bits is biased towards zero (shrinks inner products)
    m = np.array([(lambda q: (q.decode(q.encode(x)) * y).sum(1))(ta.TurboQuantMSE(dim, bits - 1, seed=s))
                  for s in range(30)])
    ratio = (m.mean(0) * true).sum() / (true * true).sum()
    assert ratio < 0.99


def test_prod_layout_bytes():
    p = ta.TurboQuantProd(100, 3)
    assert [[part.bits for part in parts] for parts in p.segments] == [[2], [1]] and p.code_bytes == 25 + 13
    assert ta.TurboQuantMSE(100, 3).code_bytes == 38


@pytest.mark.parametrize("dim", [2, 3, 5, 24, 40])
def test_small_and_odd_dims(dim):
    x = unit_rows(500, dim, seed=dim)
    q = ta.TurboQuantMSE(dim, 4)
    err = ((q.decode(q.encode(x)) - x) ** 2).sum(axis=1).mean()
    assert err < 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits must be <= 8, got 9"):
        ta.TurboQuantMSE(10, 9)
    with pytest.raises(ValueError, match="bits must be >= 2, got 1"):
        ta.TurboQuantProd(10, 1)
    with pytest.raises(ValueError, match="dim must be >= 2, got 1"):
        ta.TurboQuantMSE(1, 2)
    with pytest.raises(TypeError, match="bits must be an integer, got float"):
        ta.TurboQuantMSE(10, 2.5)
    q = ta.TurboQuantMSE(10, 2)
    with pytest.raises(ValueError, match=r"x must have 10 columns \(the index dim\), got shape \(3, 9\)"):
        q.encode(np.zeros((3, 9)))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        q.encode(np.array([["a"] * 10]))


@pytest.mark.parametrize("dim", [300, 384])
def test_fused_hadamard_encoder_equals_rotate_then_encode(dim):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((203, dim)).astype(np.float32)
    q = ta.TurboQuantMSE(dim, 3, rotation="hadamard")
    scale = rng.uniform(0.5, 2.0, 203)
    translate = (0.05 * rng.standard_normal(dim)).astype(np.float32)
    centre = (0.3 * rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
    fused = q._encode(x, scale, translate, centre, 1.2)   # the lane encoder, rounds inside
    plain = q._encode_rotated(q.rotation.apply(x), scale, translate, centre, 1.2)   # the row encoder
    # the same float operations up to the order of the sums of squares and of the dots
    np.testing.assert_array_equal(fused.codes, plain.codes)
    np.testing.assert_allclose(fused.norms, plain.norms, rtol=1e-7)
    np.testing.assert_allclose(fused.dots, plain.dots, rtol=1e-5)
