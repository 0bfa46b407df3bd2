"""The chain layer: the web3 client, token metadata, the deposit scanner, the withdrawal sender and reconciler."""
