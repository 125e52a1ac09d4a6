"""civicroute's common library: event contracts, topics, Kafka runtime, database,
settings, logging, metrics and HTTP basics shared by every service."""
