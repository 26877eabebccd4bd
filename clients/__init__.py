"""The machine side of the issuer: the ``issuer-agent`` command and its helpers.

Ships to machines on its own, so it imports nothing from ``issuer/`` or ``ca/``:
the wire constants it shares with the service live in :mod:`clients.wire`.
"""
