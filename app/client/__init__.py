"""The sse-commander client: run, follow and manage jobs and channels of a server, over HTTP only.

Layers, each in its own module:
- ``exitcodes``: how a job's end becomes this process's exit status (pure);
- ``output``: writing events to the terminal, tables and messages (pure formatting, thin I/O);
- ``connection``: the server's address and the token (never from the command line);
- ``api``: requests with friendly one-line errors, 429 and 503 handling;
- ``events``: an SSE stream over httpx-sse that reconnects with Last-Event-ID;
- ``interrupts``: Ctrl-C held while an event is written and its id recorded;
- ``commands``: the click commands.
"""
