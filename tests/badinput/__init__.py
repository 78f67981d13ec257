"""Bad input: malformed remote payloads, fuzzed API requests and broken forms (see docs/security.md)."""
