//! Unit tests of the coordinator state machine, driven by requests and explicit times.
