//! Resilience for calls to other systems: circuit breaking (and, later, caching).
