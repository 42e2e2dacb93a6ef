"""The lane encoder (kernels.encode.encode_lanes) and code targets against their NumPy twins."""
import numpy as np
import pytest

import turboann as ta
from turboann import codebook
from turboann.index import _CENTRE_SAMPLE_ROWS, estimate_centre
from turboann.kernels import encode as enc
from turboann.kernels import reference as ref
from turboann.quantizer import _no_rounds
from turboann.kernels import read_only


def _codebook(dim, bits, gain=1.0):
    return ((codebook.boundaries(dim, bits) / gain).astype(np.float32),
            (codebook.centroids(dim, bits) / gain).astype(np.float32))


def _target(layout, slots, dim, bits):
    """A target for `slots` codes filled with a sentinel byte: (target, bytes of one code)."""
    width = 4 if layout == "blocks" and bits == 3 else bits
    nbytes = (dim * width + 7) // 8
    if layout == "blocks":
        return enc.blocked_target(np.full((-(-slots // 32), nbytes, 32), 0xA5, np.uint8), bits), nbytes
    codes = np.full((slots, nbytes + 3), 0xA5, np.uint8)   # the segment starts at byte 2 of a row
    return enc.row_major_target(codes, 2, bits), nbytes


def _placed(before, stream, start, target):
    """Twin of writing codes (n, nbytes) into slots start.. of a target whose dest was `before`."""
    out = before.copy()
    out[ref.code_addresses(start + np.arange(len(stream)), stream.shape[1], *target[1:5])] = stream
    return out


def _encode(x, rounds, scale, translate, centre, b, c, target, start, tail=None, spread=None):
    """encode_lanes into slots start.. of target; tail (first, boundaries, centroids, width) or None;
    spread (d,) float32 or None for all 1."""
    n, d = x.shape
    norms, dots = np.empty(n), np.empty(n, np.float32)
    tail = (d, b, c, target.width) if tail is None else tail
    spread = np.ones(d, np.float32) if spread is None else spread
    enc.encode_lanes(read_only(x), *rounds, scale, translate, centre, spread, b, c, *tail, target.dest, start, target.base,
                     target.block_stride, target.lane_stride, target.byte_stride, target.width, norms, dots)
    return norms, dots


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dim", [7, 100])
@pytest.mark.parametrize("layout,start", [("rows", 0), ("rows", 5), ("blocks", 0), ("blocks", 37)])
@pytest.mark.parametrize("scaling", ["scaled", "translated", "plain", "spread"])
def test_encode_lanes_matches_reference(bits, dim, layout, start, scaling):
    rng = np.random.default_rng(bits * 1000 + dim * 10 + start)
    n = 75   # not a multiple of 8: a partial group of lanes
    y = (3 * rng.standard_normal((n, dim))).astype(np.float32)
    translate = (0.3 * rng.standard_normal(dim) if scaling != "plain" else np.zeros(dim)).astype(np.float32)
    centre = (0.1 * rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
    b, c = _codebook(dim, bits, 1.1)
    scale = rng.uniform(0.5, 2.0, n) if scaling == "scaled" else np.empty(0)
    y[3] = translate   # v = 0 (with scale 1): zero norm and dots, no crash
    if scaling == "scaled":
        scale[3] = 1.0
    # per-coordinate spreads (the "translate" estimator's): codes of (u - centre) / spread
    spread = rng.uniform(0.3, 3.0, dim).astype(np.float32) if scaling == "spread" else None
    target, nbytes = _target(layout, start + n + 3, dim, bits)
    before = target.dest.copy()
    norms, dots = _encode(y, _no_rounds(dim), scale, translate, centre, b, c, target, start, spread=spread)
    want, want_norms, want_dots = ref.encode_lanes(y, scale, translate, centre, b, c, target.width, spread=spread)
    if spread is not None and bits > 1:   # the spreads changed the codes (1 bit: only signs, which they keep)
        plain, _, _ = ref.encode_lanes(y, scale, translate, centre, b, c, target.width)
        assert (plain != want).any()
    assert want.shape[1] == nbytes
    np.testing.assert_array_equal(target.dest, _placed(before, want, start, target))   # and no other byte
    np.testing.assert_allclose(norms, want_norms, rtol=1e-12)
    np.testing.assert_allclose(dots, want_dots, rtol=1e-5, atol=1e-6)
    assert dots[3] == norms[3] == 0.0


@pytest.mark.parametrize("bits,tail_bits,first", [(2, 1, 96), (3, 2, 88), (4, 2, 90), (4, 3, 96)])
@pytest.mark.parametrize("layout,start", [("rows", 3), ("blocks", 37)])
def test_encode_lanes_tail_matches_reference(bits, tail_bits, first, layout, start):
    """Coordinates from `first` on take a narrower codebook; their codes follow the others' from a whole byte."""
    rng = np.random.default_rng(bits * 100 + first + start)
    dim, n = 100, 75
    y = rng.standard_normal((n, dim)).astype(np.float32)
    translate = (0.3 * rng.standard_normal(dim)).astype(np.float32)
    centre = (0.1 * rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
    b, c = _codebook(dim, bits, 1.1)
    tb, tc = _codebook(dim, tail_bits, 1.1)
    width = enc.target_width(bits, layout == "blocks")
    tail_width = enc.target_width(tail_bits, layout == "blocks")
    nbytes = first * width // 8 + -(-(dim - first) * tail_width // 8)
    if layout == "blocks":
        target = enc.blocked_target(np.full((-(-(start + n) // 32), nbytes, 32), 0xA5, np.uint8), bits)
    else:
        target = enc.row_major_target(np.full((start + n, nbytes + 3), 0xA5, np.uint8), 2, bits)
    before = target.dest.copy()
    spread = rng.uniform(0.3, 3.0, dim).astype(np.float32)
    norms, dots = _encode(y, _no_rounds(dim), np.empty(0), translate, centre, b, c, target, start,
                          (first, tb, tc, tail_width), spread)
    want, want_norms, want_dots = ref.encode_lanes(y, np.empty(0), translate, centre, b, c, width,
                                                   (first, tb, tc, tail_width), spread)
    assert want.shape[1] == nbytes
    np.testing.assert_array_equal(target.dest, _placed(before, want, start, target))
    np.testing.assert_allclose(norms, want_norms, rtol=1e-12)
    np.testing.assert_allclose(dots, want_dots, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dim", [130, 384])
def test_encode_lanes_with_rounds_equals_rotating_first(dim):
    """The Hadamard rounds inside the encoder give the codes of the rotation kernel's rows, bit for bit."""
    rng = np.random.default_rng(dim)
    n = 45
    x = rng.standard_normal((n, dim)).astype(np.float32)
    rotation = ta.TurboQuantMSE(dim, 2, rotation="hadamard").rotation
    r = rotation._rounds
    scale = rng.uniform(0.5, 2.0, n)
    translate = (0.05 * rng.standard_normal(dim)).astype(np.float32)
    centre = (0.3 * rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
    b, c = _codebook(dim, 2)
    for rows_scale, rows_translate in ((scale, translate), (np.empty(0), np.zeros(dim, np.float32))):
        fused, _ = _target("blocks", n, dim, 2)
        plain, _ = _target("blocks", n, dim, 2)
        got = _encode(x, (r.signs, r.perms, r.overlap_signs), rows_scale, rows_translate, centre, b, c, fused, 0)
        want = _encode(rotation.apply(x), _no_rounds(dim), rows_scale, rows_translate, centre, b, c, plain, 0)
        np.testing.assert_array_equal(fused.dest, plain.dest)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got[0], np.linalg.norm(x.astype(np.float64), axis=1), rtol=1e-6)


@pytest.mark.parametrize("bits,width", [(1, 1), (3, 3), (3, 4), (4, 4), (8, 8)])
@pytest.mark.parametrize("start", [0, 29])
def test_write_codes_matches_reference(bits, width, start):
    rng = np.random.default_rng(bits * 10 + width + start)
    dim, n = 13, 40
    codes = np.zeros((n, 1 + (dim * bits + 7) // 8), np.uint8)
    ref.pack_codes(rng.integers(0, 1 << bits, (n, dim)), bits, 1, out=codes)
    target, nbytes = _target("blocks" if width == 4 else "rows", start + n, dim, bits)
    target = target._replace(width=width)
    before = target.dest.copy()
    slots = start + np.arange(n)
    enc.write_codes(read_only(codes), 1, bits, dim, target.dest, slots, *target[1:5], width)
    np.testing.assert_array_equal(target.dest, ref.write_codes(codes, 1, bits, dim, before, slots, *target[1:6]))


@pytest.mark.parametrize("unit", [False, True])
@pytest.mark.parametrize("starts,lengths", [([0], [10]), ([0, 300, 301, 700], [300, 1, 5, 301])])
def test_sample_sum_matches_reference(unit, starts, lengths):
    x = np.random.default_rng(len(starts)).standard_normal((1001, 9)).astype(np.float32)
    x[3] = 0.0
    starts, lengths = np.array(starts, np.int64), np.array(lengths, np.int64)
    total, count = enc.sample_sum(x, starts, lengths, unit)
    want, want_count = ref.sample_sum(x, starts, lengths, unit)
    assert count == want_count
    np.testing.assert_allclose(total, want, rtol=1e-9, atol=1e-9)
    x[6] = np.nan
    assert np.isnan(enc.sample_sum(x, starts, lengths, unit)[0]).all()


@pytest.mark.parametrize("n", [3000, 70_000])   # all rows; runs of rows
def test_centre_estimate_is_the_mean_of_its_rows(n):
    x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32) + 5
    units = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    for metric, rows in (("cosine", units), ("l2", x.astype(np.float64))):
        got = estimate_centre(x, metric)
        if n <= _CENTRE_SAMPLE_ROWS:
            np.testing.assert_allclose(got, rows.mean(0), rtol=1e-6)
            continue
        # a sample of _CENTRE_SAMPLE_ROWS iid rows: within 5 standard errors of the mean of all
        m = _CENTRE_SAMPLE_ROWS
        standard_error = rows.std(0) / np.sqrt(m) * np.sqrt(1 - m / n)
        assert np.all(np.abs(got - rows.mean(0)) < 5 * standard_error), metric


@pytest.mark.parametrize("scaling", ["plain", "scaled"])
def test_encoder_norms_float32_and_their_float64_fallback(scaling):
    """Norms are float32 sums in a fixed order; rows whose squares leave [2^-100, 2^100] are summed in
    float64 instead, so huge, tiny and non-finite rows keep their true norms (or NaN/inf) in both
    encoders, which agree bit for bit."""
    rng = np.random.default_rng(7 if scaling == "plain" else 8)
    n, dim, bits = 40, 101, 2
    y = rng.standard_normal((n, dim)).astype(np.float32)
    # squares summing past 2^100 (inf in float32 for the first), below 2^-100 (0 in float32 for the
    # second), and, row 3, just inside the float32 range
    magnitudes = [1e25, 1e-25, 1e19, 3e-16, 1e-30]
    for row, m in enumerate(magnitudes):
        y[row] *= np.float32(m)
    y[6, 5] = np.nan
    y[7, 9] = np.inf
    y[8] = 0.0
    scale = rng.uniform(0.5, 2.0, n) if scaling == "scaled" else np.empty(0)
    translate = np.zeros(dim, np.float32)
    centre = np.zeros(dim, np.float32)
    b, c = _codebook(dim, bits)
    target, _ = _target("rows", n, dim, bits)
    norms, _ = _encode(y, _no_rounds(dim), scale, translate, centre, b, c, target, 0)
    v = y * (scale.astype(np.float32)[:, None] if scaling == "scaled" else np.float32(1))
    want = ref.encoder_norms(v)
    np.testing.assert_array_equal(norms, want)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.sqrt((v.astype(np.float64) ** 2).sum(axis=1))
    finite = np.isfinite(exact)
    assert not finite[6] and not finite[7] and np.isnan(norms[6]) and np.isinf(norms[7])
    np.testing.assert_allclose(norms[finite], exact[finite], rtol=1e-6)
    fallback = [0, 1, 2, 4]
    np.testing.assert_allclose(norms[fallback], exact[fallback], rtol=1e-12)
    assert norms[8] == 0.0
    # the row encoder: the same norms
    codes = np.zeros((n, (dim * bits + 7) // 8), np.uint8)
    row_norms, dots = np.empty(n, np.float32), np.empty(n, np.float32)
    enc.encode_directions(y, np.ones(n) if scaling == "plain" else scale, translate, centre,
                          np.ones(dim, np.float32), b, c, bits, codes, 0,
                          row_norms, dots, np.empty((0, 0), np.float32))
    np.testing.assert_array_equal(row_norms, want.astype(np.float32))
