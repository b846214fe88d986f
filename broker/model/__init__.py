"""Domain types and errors: orders, worklist queries, instances."""
