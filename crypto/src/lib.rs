//! Canonical JSON, hashes, signatures, event ids. Pure functions, no I/O.
