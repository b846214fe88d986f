"""The data flows: one module per arrow of DESIGN.md's flow."""
