"""Shipyard core: the source model's signature, the user spec, reports and gates."""

__version__ = "0.1.0"
