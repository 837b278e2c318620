"""The benchmark harness: Action Links against the hand-written recipe (see README.md)."""
