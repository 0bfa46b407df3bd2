"""The Telegram bot process: python bot.py.

This foundation checks settings and schema; the bot issue adds the handlers.
"""
import sys

import boot


def main() -> int:
    settings = boot.settings_or_exit("DATABASE_URL")
    boot.schema_current_or_exit(settings, "bot")
    boot.require_or_exit(settings, "BOT_TOKEN")
    boot.fail("bot: the Telegram handlers are not built yet (issue 3); schema and settings are fine")


if __name__ == "__main__":
    sys.exit(main())
