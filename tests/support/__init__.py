"""Test helpers: real processes, a real TCP proxy, real receivers. No mocks of our own parts."""
