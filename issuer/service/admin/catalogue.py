"""Every operator action, by name: the one table the admin API routes and the ``issuer`` command runs.

| permission | actions |
|---|---|
| ``read``    | token.list, certs.list/show/stale/history, instances.list, deny.list, ca.status |
| ``tokens``  | token.create, token.revoke |
| ``revoke``  | revoke, instances.reset (and deny.add with ``revoke``) |
| ``deny``    | deny.add, deny.remove |
| ``ca``      | ca.rotate, ca.activate, ca.retire |
| ``publish`` | truststore.publish |
| ``audit``   | audit.query |
| (any operator) | whoami |
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from issuer.service.admin.access import ACCESS_ACTIONS
from issuer.service.admin.actions import Action
from issuer.service.admin.ca_actions import CA_ACTIONS
from issuer.service.admin.fleet import FLEET_ACTIONS

__all__ = ["ACTIONS"]

ACTIONS: Mapping[str, Action[Any]] = MappingProxyType(
    {action.name: action for action in (*FLEET_ACTIONS, *ACCESS_ACTIONS, *CA_ACTIONS)}
)
