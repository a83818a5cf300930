"""Who may do what, and with which input: pure rules (auth, access, actions, allowlist, limits, parsing).

The master imports some of these before it forks: no gevent or Flask anywhere here.
"""
