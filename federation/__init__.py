"""Flower apps generic over the Task protocol: sites train locally, only model updates travel."""
