"""Fixtures: real PostgreSQL and Redis on 127.0.0.1, a migrated template database cloned per test."""
import contextlib
import itertools
import os

import psycopg
import pytest

from core.settings import Settings, load
from db import migrate
from db.pool import configure_connection, connection_kwargs, open_pool
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer

TEMPLATE_DB = "migrated_template"
_db_counter = itertools.count(1)


def make_settings(**overrides) -> Settings:
    """Settings as a process would load them, from an explicit environment (no .env file)."""
    environ = {"ENV_FILE": "/nonexistent/.env", **{k: str(v) for k, v in overrides.items()}}
    return load(environ)


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def template_db(pg_server):
    """A database with every migration applied; tests clone it (CREATE DATABASE ... TEMPLATE)."""
    pg_server.admin(f"CREATE DATABASE {TEMPLATE_DB}")
    with psycopg.connect(pg_server.url(TEMPLATE_DB), autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover())
    return TEMPLATE_DB


@contextlib.contextmanager
def scratch_database(server, prefix: str, template: str | None = None):
    """Create a database (optionally cloned from `template`), yield its URL, drop it after."""
    name = f"{prefix}_{os.getpid()}_{next(_db_counter)}"
    clone = f" TEMPLATE {template}" if template else ""
    server.admin(f"CREATE DATABASE {name}{clone}")
    try:
        yield server.url(name)
    finally:
        server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(pg_server, template_db):
    """URL of a fresh migrated database of this test's own."""
    with scratch_database(pg_server, "test", template_db) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_server):
    """URL of a fresh database with no schema at all."""
    with scratch_database(pg_server, "empty") as url:
        yield url


@pytest.fixture
def settings(db_url):
    return make_settings(DATABASE_URL=db_url, DB_POOL_MAX_SIZE=60, DB_POOL_TIMEOUT_S=30)


@pytest.fixture
def pool(settings):
    pool = open_pool(settings, "tests")
    pool.wait(timeout=10)
    yield pool
    pool.close()


@pytest.fixture
def conn(settings):
    """One autocommit connection configured like the application's."""
    with psycopg.connect(settings.database_url.reveal(), autocommit=True,
                         **connection_kwargs(settings, "tests")) as connection:
        configure_connection(connection)
        yield connection


@pytest.fixture
def own_pg():
    """A private PostgreSQL server a test may stop, kill or freeze."""
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def api():
    """A Bot API stand-in of this test's own (bot.py and worker.py talk to it)."""
    from devstack.telegram_api import BotApiStandIn
    from tests.botharness import BOT_TOKEN
    with BotApiStandIn(token=BOT_TOKEN) as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def own_redis():
    """A private Redis server a test may stop, kill or freeze."""
    server = RedisServer().start()
    yield server
    server.close()


# -- local EVM chain (anvil from node_modules); started only for tests that ask for it

@pytest.fixture(scope="session")
def anvil():
    """A session-wide anvil node; tests must not stop, kill or freeze it (use own_anvil)."""
    from devstack.anvil import AnvilNode, ensure_node_modules
    ensure_node_modules()
    node = AnvilNode().start()
    yield node
    node.close()


@pytest.fixture
def own_anvil(tmp_path):
    """A private anvil with a state file, which a test may stop, kill -9, freeze or restart."""
    from devstack.anvil import AnvilNode, ensure_node_modules
    ensure_node_modules()
    node = AnvilNode(state_path=tmp_path / "anvil-state.json").start()
    yield node
    node.close()


@pytest.fixture
def w3(anvil):
    """Web3 connected to the session anvil."""
    from devstack import chaintools
    return chaintools.connect(anvil.url)


@pytest.fixture
def token6(w3):
    """A freshly deployed 6-decimal TestToken (USDT-like)."""
    from devstack import chaintools
    return chaintools.deploy_token_info(w3, "Tether USD", "USDT", 6)


@pytest.fixture
def token18(w3):
    """A freshly deployed 18-decimal TestToken (DAI-like)."""
    from devstack import chaintools
    return chaintools.deploy_token_info(w3, "Dai Stablecoin", "DAI", 18)
