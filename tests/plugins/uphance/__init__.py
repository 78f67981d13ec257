"""Tests of the Uphance plugin."""
