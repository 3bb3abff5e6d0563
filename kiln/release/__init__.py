"""Release decisions: block, shadow, canary, promote, rollback; consumes gate results and
live-traffic statistics (kiln.monitoring) and acts through registry stages."""
