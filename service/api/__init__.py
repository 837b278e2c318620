"""Thin HTTP routers: parse, call a use case, render. No SQL, no business rules."""
