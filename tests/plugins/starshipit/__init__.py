"""Tests of the Starshipit plugin."""
