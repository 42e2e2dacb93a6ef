"""turboann: training-free compressed vector search.

TurboQuant codes (random rotation + Lloyd-Max scalar quantizer of the exact
coordinate law) with Numba scan kernels. Public API:

    Index            flat index: add / search / remove / save
    IVFIndex         coarse k-means lists over the same codes: train / add / search(nprobe)
    TurboQuantMSE    quantizer minimising reconstruction error
    TurboQuantProd   quantizer with unbiased inner products (QJL residual sketch)
    load             read (or with mmap=True map, read-only) an index file written by save
    set_num_threads  threads for later searches
"""
from . import _threading  # noqa: F401  (first: makes TBB loadable before any parallel kernel runs)
from .index import Index, set_num_threads
from .ivf import IVFIndex
from .io import IndexFileError, ReadOnlyIndexError, load
from .quantizer import EncodedVectors, TurboQuantMSE, TurboQuantProd

__all__ = ["Index", "IVFIndex", "TurboQuantMSE", "TurboQuantProd", "EncodedVectors", "load", "set_num_threads",
           "IndexFileError", "ReadOnlyIndexError"]
__version__ = "0.1.0"
