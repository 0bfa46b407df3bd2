"""The bottom layer: settings, errors, token amounts, addresses, the i18n catalog, logging. Imports nothing of ours."""
