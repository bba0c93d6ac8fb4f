"""Fault and load scenarios against the real local stack.

``make reliability`` runs them (run.py); docs/reliability.md has the figures.
"""
