"""The local stack without Docker: Kafka, PostgreSQL, the services, demo departments."""
