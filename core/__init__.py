"""Pieces every layer shares: the settings object and the error hierarchy."""
