"""The background worker process: python worker.py.

This foundation checks settings and schema; later issues add the job table.
"""
import sys

import boot


def main() -> int:
    settings = boot.settings_or_exit("DATABASE_URL")
    boot.schema_current_or_exit(settings, "worker")
    boot.fail("worker: no jobs are built yet (issues 3 and 4); schema and settings are fine")


if __name__ == "__main__":
    sys.exit(main())
