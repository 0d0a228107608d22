"""RFC 3161 timestamps of checkpoints: the message imprint, offline checks of a token, and the client that
asks a Time Stamping Authority (docs/timestamps.md). Needs the ``[timestamps]`` extra (rfc3161-client)."""
