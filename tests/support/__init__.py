"""Helpers, constants and fixtures that several test files share (a test file never imports another)."""
