"""Several brokers on one database: who is alive (membership)."""
