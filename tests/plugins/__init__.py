"""Tests of the built-in channel plugins."""
