"""The IHE ATNA audit trail: DICOM audit messages (PS3.15 A.5) sent as RFC 5424 syslog over
TLS, TCP or UDP to an audit record repository, through a durable spool."""
