# One image for all four services; the command picks the service:
#   docker run civicroute python -m services.router
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CIVIC_HTTP_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY deploy/__init__.py ./deploy/__init__.py
COPY deploy/cities ./deploy/cities
RUN pip install --no-cache-dir . && useradd --system --uid 10001 civic
USER civic

# Default: intake. docker-compose sets the command per service.
EXPOSE 8001 8002 8003 8004
CMD ["python", "-m", "services.intake"]
