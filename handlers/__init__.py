"""The bot's side: user and admin flows, keyboards, the handler context and the middlewares."""
