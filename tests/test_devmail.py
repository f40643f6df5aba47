"""inboxql.devmail's ports: a private Dovecot listens on four, which must differ (doveconf refuses a duplicate
listener, which failed a test run once when the kernel handed one port out twice)."""

from __future__ import annotations

from inboxql.devmail import free_ports


def test_ports_chosen_together_are_distinct_and_avoid_the_ones_given() -> None:
    for _ in range(20):
        given = free_ports(2)
        chosen = free_ports(30, avoid=given)
        assert len(set(chosen)) == 30
        assert not set(chosen) & set(given)
