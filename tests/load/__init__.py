"""Locust load tests: ``make loadtest`` (headless, with a report) and ``make loadtest-ui``."""
