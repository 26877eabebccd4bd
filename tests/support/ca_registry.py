"""Registry set-up for tests: a prepared issuing CA made with the low-level building blocks.

``issuer ca rotate`` (``issuer.service.ca.rotation.rotate_issuer``) refuses what some tests need to
set up (a second prepared issuer, a validity under the roles' max TTL); this does not.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.hierarchy import create_issuing
from issuer.errors import ConfigError
from issuer.service.ca.register import (
    RegisteredCA,
    insert_prepared,
    load_root,
    organization_of,
    registered_ca,
    write_issuer_key,
)
from issuer.store import issuers as store


async def prepare_file_issuer(
    sessions: async_sessionmaker[AsyncSession],
    *,
    ca_dir: Path,
    passphrase: bytes,
    now: datetime,
    validity: timedelta,
    common_name: str,
) -> RegisteredCA:
    """Make a new issuing CA under the registry's root, its key in a file in ``ca_dir``, as ``prepared``.

    A prepared issuer is in the truststore at once (every replica within a refresh) but signs
    nothing until activated. Needs the root key (``root.key.pem``); everything else runs without it.
    Raises :class:`ConfigError` ``root_key_unavailable`` when the root key is offline.
    """
    async with sessions() as session:
        roots = [r for r in await store.list_roots(session) if r.state == "active" and r.key_ref]
    if not roots:
        raise ConfigError("no root with a key is registered; run `issuer ca init` first")
    root = load_root(roots[0], ca_dir=ca_dir, passphrase=passphrase)
    issuing = create_issuing(
        root, now=now, validity=validity, common_name=common_name, organization=organization_of(root)
    )
    key_path = write_issuer_key(issuing, ca_dir=ca_dir, passphrase=passphrase)
    async with sessions() as session, session.begin():
        issuer_id = await insert_prepared(session, issuing.certificate, key_path=key_path, ca_dir=ca_dir, now=now)
    return registered_ca(issuer_id, issuing.certificate)
