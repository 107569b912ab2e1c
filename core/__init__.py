"""Pieces every layer shares: the settings object, the error hierarchy, the tracing lock."""
