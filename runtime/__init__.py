"""What the programs start with: start-up checks and the worker's context (pool, token, chain client, Bot API)."""
