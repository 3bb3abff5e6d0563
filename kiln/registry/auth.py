"""Who may change what serves: the admin token, compared in constant time, never echoed."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from kiln.errors import AuthError

__all__ = ["check_admin"]

_HINT = "pass the admin token (the CLI reads --token or KILN_TOKEN)"


def check_admin(configured: SecretStr | None, presented: str | None) -> None:
    """Raise AuthError unless ``presented`` is the configured admin token.

    No configured token (or an empty one) refuses every write rather than allowing them all.
    """
    expected = "" if configured is None else configured.get_secret_value()
    if not expected:
        raise AuthError(
            "writes need an admin token: set KILN_ADMIN_TOKEN on the server/CLI machine",
            hint="then pass the same token with --token or KILN_TOKEN",
        )
    if not presented:
        raise AuthError("this write needs the admin token, and none was given", hint=_HINT)
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise AuthError("the admin token given is not the configured one", hint=_HINT)
