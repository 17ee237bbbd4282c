"""The content-addressed store: ids, objects, chunking, refs, locks, gc and fsck.

This package imports only the standard library, xxhash, pyfastcdc and fsspec
(enforced by tests/test_source.py).
"""

FORMAT_VERSION = 1
