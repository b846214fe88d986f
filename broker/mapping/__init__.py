"""Declarative HL7 → domain mapping driven by the YAML files under mappings/."""
