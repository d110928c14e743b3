"""Python client SDK for the recommendation server (issue #4)."""
