"""Adapters: ports implemented on real drivers, chosen by configuration."""
