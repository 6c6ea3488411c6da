"""Helpers shared by the tests: real server processes, keys, images."""
