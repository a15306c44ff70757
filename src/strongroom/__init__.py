"""Strongroom: a self-hosted security gateway for payment data."""
