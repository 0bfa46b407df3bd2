"""The project's own exception hierarchy; driver errors are translated into it at one boundary."""


class AppError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(AppError):
    """A setting is missing or malformed; the message names the variable, never a secret."""


class AmountError(AppError, ValueError):
    """Text that is not an acceptable token amount."""


class AddressError(AppError, ValueError):
    """Text that is not an acceptable EVM address."""


class SignatureError(AppError, ValueError):
    """Text that is not a well-formed signature (0x followed by 130 hex digits)."""


class MigrationError(AppError):
    """The migrations on disk and the database disagree, or the database is behind."""


class DatabaseError(AppError):
    """Any failure reported by PostgreSQL or its driver (mirrors psycopg.DatabaseError)."""


class DatabaseOperationalError(DatabaseError):
    """The server is unreachable, restarting or timing out (mirrors psycopg.OperationalError)."""


class DatabaseInterfaceError(DatabaseError):
    """The client side of the connection is broken (mirrors psycopg.InterfaceError)."""


class TokenInfoUnavailable(AppError):
    """The token's symbol and decimals can be read neither from the RPC nor from the cached copy."""


class BreakerOpen(AppError):
    """A circuit breaker considers its dependency down; the call was not attempted."""


class MoneyRuleError(AppError):
    """A money operation was refused because it would break a money rule."""


class InsufficientFunds(MoneyRuleError):
    """The balance does not cover the requested amount plus fee."""


class NotFound(MoneyRuleError):
    """The referenced user, deposit or withdrawal does not exist."""


class InvalidTransition(MoneyRuleError):
    """The record is not in a state that allows the requested change."""


class WalletInUse(AppError):
    """The wallet address is already bound to another user."""


class RebindRefused(MoneyRuleError):
    """The user has open deposit requests or withdrawals in flight, so the wallet cannot change now."""


class LeaseLost(AppError):
    """This process does not hold the worker lease (or no longer at its epoch): it must not act on the chain."""
