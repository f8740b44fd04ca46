"""Helpers shared by the whole test suite: real Redis servers and local clusters on free ports."""
