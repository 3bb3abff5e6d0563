"""Monitoring of served versions: live-traffic statistics over captured requests."""
