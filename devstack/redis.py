"""A throwaway Redis server on 127.0.0.1."""
import shutil

import redis

from devstack.service import Service


class RedisServer(Service):
    name = "redis"

    def __init__(self, port: int | None = None):
        super().__init__(port)
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: run `python -m devstack install`")

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]  # an acknowledged entry survives kill -9
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.base_dir), "--daemonize", "no", "--protected-mode", "yes",
                *persistence]

    def ready(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url(), socket_timeout=1, socket_connect_timeout=1)
            with client:
                return client.ping()
        except redis.RedisError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"
