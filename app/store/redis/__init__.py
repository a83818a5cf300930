"""The Redis Streams store (``store_url``): jobs, their logs and channels shared by every worker of every host.

Modules: codec.py (pure: events and job records to and from Redis fields),
scripts.py (the Lua that makes appends and epochs atomic), store.py
(``RedisStore``), reader.py (the one blocking reader per worker), writer.py
(the owner's batched appends), pacing.py (jobs waiting for their viewers on
other workers).
"""
