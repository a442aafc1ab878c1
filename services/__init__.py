"""The maas services: gateway, registry and inference, and what they share."""
