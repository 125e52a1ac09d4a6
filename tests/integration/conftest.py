"""Fixtures of the integration tests (each service's live in its own support module)."""

from tests.integration.intake_support import intake_env, kafka_intake  # noqa: F401
