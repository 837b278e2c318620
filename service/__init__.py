"""Action Links: signed action links, redeemed exactly as often as allowed."""

__version__ = "0.1.0"
