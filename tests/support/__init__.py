"""Test support that is not part of the package: a strict OpenAI-compatible server."""
