"""Messages to other systems: the outbox worker and its HL7 sender."""
