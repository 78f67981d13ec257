"""Tests of The Iconic channel plugin."""
