"""Tests of the Shopify channel plugin."""
