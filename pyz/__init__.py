"""``issuer-agent.pyz``: the agent as one file (``make agent-pyz``); the builder and the file's bootstrap."""
