"""From statistics to claims: ranking, the held-out r, replication, comparing runs."""
