//! Integration tests of hoard-engine.
