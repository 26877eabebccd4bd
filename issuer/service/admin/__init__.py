"""The operator's use cases behind the CLI: join tokens, certificate and instance listings."""
