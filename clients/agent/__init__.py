"""``issuer-agent``: get a client certificate for this machine's own key."""
