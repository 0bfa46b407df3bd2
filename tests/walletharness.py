"""Wallet keys and proven bindings for tests: every binding is signed by a real key, as a user's wallet signs."""
import itertools

import psycopg
from psycopg.rows import dict_row

from db import wallets
from devstack import chaintools

_key_indexes = itertools.count(100)  # past anvil's funded dev accounts: more keys of the same mnemonic


def new_key() -> str:
    """A private key of the anvil mnemonic nobody else in this test run uses."""
    return chaintools.dev_private_keys(1, first=next(_key_indexes))[0]


def bind_proven(conn, user_id: int, key: str, head: int = 0) -> dict:
    """Bind the key's address to `user_id` with a real signature, as /wallet does."""
    return wallets.bind(conn, user_id, chaintools.address_of(key), chaintools.sign_wallet_proof(key, user_id), head)


def bind_proven_at(database_url: str, user_id: int, key: str, head: int = 0) -> dict:
    """bind_proven in a transaction of its own on `database_url`."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        with conn.transaction():
            return bind_proven(conn, user_id, key, head)
