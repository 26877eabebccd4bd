"""Which role a request gets: the one it names, or the only one for its method."""

from __future__ import annotations

from collections.abc import Sequence

from issuer.errors import ClientError
from issuer.policy import Role, select_role

__all__ = ["RoleBook"]


class RoleBook:
    """The configured roles, looked up by name and method."""

    def __init__(self, roles: Sequence[Role]) -> None:
        self.roles = tuple(roles)

    def get(self, name: str, *, method: str) -> Role:
        """The role ``name`` if it allows ``method``; ClientError ``role_unknown`` otherwise."""
        for role in self.roles:
            if role.name == name and method in role.methods:
                return role
        raise ClientError(f"There is no role {name!r} for the {method} method.", code="role_unknown", role=name)

    def select(self, requested: str | None, *, method: str) -> Role:
        """The role a request names, or the only one for ``method``.

        Raises ClientError ``method_not_enabled`` (no role allows it), ``role_required``
        (several do; name one) or ``role_unknown``.
        """
        if requested is not None:
            return self.get(requested, method=method)
        role = select_role(self.roles, method=method, requested=None)
        if role is not None:
            return role
        names = [r.name for r in self.roles if method in r.methods]
        if not names:
            raise ClientError(f"No role allows the {method} method.", code="method_not_enabled")
        raise ClientError(
            f"Several roles allow {method}; name one with 'role' ({', '.join(names)}).", code="role_required"
        )
