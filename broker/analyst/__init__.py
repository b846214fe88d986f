"""The integration analyst's tools: the query log, preview, explanation, trace and replay."""
