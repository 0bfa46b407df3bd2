"""A throwaway Redis server on 127.0.0.1."""
import shutil

import redis

from devstack.service import Service


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `python -m devstack install`")
    return binary


class RedisServer(Service):
    name = "redis"

    def __init__(self, port: int | None = None, replica_of: "RedisServer | None" = None):
        super().__init__(port)
        self.binary = redis_binary()
        self.replica_of = replica_of

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]  # an acknowledged entry survives kill -9
        replica = ["--replicaof", "127.0.0.1", str(self.replica_of.port)] if self.replica_of else []
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.base_dir), "--daemonize", "no", "--protected-mode", "yes",
                *persistence, *replica]

    def role(self) -> str:
        with redis.Redis.from_url(self.url(), socket_timeout=1, socket_connect_timeout=1) as client:
            return client.role()[0].decode()

    def ready(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url(), socket_timeout=1, socket_connect_timeout=1)
            with client:
                return client.ping()
        except redis.RedisError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class RedisSentinel(Service):
    """One Redis Sentinel watching `master` as SERVICE; it rewrites its own config file, so each has one."""

    name = "sentinel"
    SERVICE = "devstack"

    def __init__(self, master: RedisServer, down_after_ms: int = 500, port: int | None = None):
        super().__init__(port)
        self.binary = redis_binary()
        self.config = self.base_dir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.base_dir}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds {self.SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
            f"sentinel parallel-syncs {self.SERVICE} 1\n")

    def command(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel"]

    def ready(self) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1) as client:
                return client.ping()
        except redis.RedisError:
            return False

    def master_port(self) -> int | None:
        """The port this sentinel currently names as the master."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1) as client:
            found = client.sentinel_get_master_addr_by_name(self.SERVICE)
        return int(found[1]) if found else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
