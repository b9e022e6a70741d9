"""Cache-aside in front of a slow "database": read Redis, fall back to the database on a miss, a
LOADING error that persists, or a timeout, and never return a wrong or missing value. Run it under
faultline (scenario.lua); the proxy's address comes from FAULTLINE_CACHE_ADDR (`faultline run`)."""
import os
import sys
import time

import redis

DATABASE = {f"user:{i}": f"name-{i}" for i in range(1, 6)}
host, port = os.environ.get("FAULTLINE_CACHE_ADDR", "127.0.0.1:6380").rsplit(":", 1)
cache = redis.Redis(host=host, port=int(port), socket_timeout=0.3, decode_responses=True)
stats = {"hits": 0, "misses": 0, "loading_retries": 0, "fallbacks": 0}


def get_user(key):
    for attempt in range(3):
        try:
            value = cache.get(key)
        except redis.exceptions.BusyLoadingError:
            stats["loading_retries"] += 1
            time.sleep(0.05 * (attempt + 1))
            continue
        except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError):
            stats["fallbacks"] += 1
            cache.connection_pool.disconnect()  # a stalled connection is not used again
            return DATABASE[key]
        if value is not None:
            stats["hits"] += 1
            return value
        stats["misses"] += 1
        value = DATABASE[key]
        try:
            cache.set(key, value, ex=60)
        except redis.exceptions.RedisError:
            pass  # the cache is best effort
        return value
    stats["fallbacks"] += 1
    return DATABASE[key]


for key in DATABASE:
    cache.delete(key)
for round_ in range(2):
    for key, want in DATABASE.items():
        got = get_user(key)
        if got != want:
            sys.exit(f"{key}: got {got!r}, want {want!r}")
print("all lookups right:", stats)
