"""The admin HTTP server: web console, JSON REST API, Prometheus metrics and health probes."""
