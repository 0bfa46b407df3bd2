"""Plain-SQL modules, one per aggregate; functions take a psycopg connection."""
