"""Accountability: authorised uses (deployments), a fail-closed and tamper-evident audit, retention and erasure.

Every action here takes an authenticated ``Actor`` (``accountability.actors``); the CLI and the
review console call the same functions. Imports: ``schemas``, ``runtime``, ``storage``; the stages
import this package, never the reverse (docs/accountability.md).
"""
