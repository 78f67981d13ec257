"""Security guarantees and the tests that prove them (see docs/security.md)."""
