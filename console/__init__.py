"""The review console: an HTTP API with roles and two-person confirmation, and a web page on top of it.

``vigil console`` serves it (``console.app.serve``). Users and their argon2
hashes live in a 0600 file (``console.users``); sessions, CSRF and the
trusted-proxy identity in ``console.auth``; alert review state is derived
from the reviews topic (``console.reviews``); watchlist, deployment and audit
actions go through ``console.actions``, the one place that calls the
accountability code the CLI uses too.
"""
