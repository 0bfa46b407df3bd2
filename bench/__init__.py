"""Benchmarks of the disaster-recovery pieces on real services: python -m bench [name ...].

Each benchmark measures the product and a baseline side by side in one run and returns
rows for one table (plain text that is also a Markdown table). Targets are goals the
table reports against; nothing here asserts on a timing.
"""
