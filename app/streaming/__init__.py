"""From event logs to the socket: the SSE encoder, the one response loop, direct delivery, the wire."""
