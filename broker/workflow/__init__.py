"""What domain events mean for patients, requested procedures and their steps."""
