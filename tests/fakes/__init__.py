"""Fakes of the outside world for tests: real servers on loopback that speak real wire formats."""
