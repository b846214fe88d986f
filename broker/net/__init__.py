"""Network plumbing shared by the listeners: TLS, allow-lists, per-address limits."""
