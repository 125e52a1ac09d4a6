"""Deployment: city packs, the local stack, docker-compose, Prometheus and Grafana."""
