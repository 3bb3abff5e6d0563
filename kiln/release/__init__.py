"""Release decisions above the gates and the monitoring: block, shadow, canary, promote,
rollback.

- :mod:`kiln.release.controller`: :class:`Release`, which gates a version after its run and
  decides, re-checks it, and runs the watch passes;
- :mod:`kiln.release.decision`: what a decision is made of (``Decision``, ``Recheck``);
- :mod:`kiln.release.watch`: the watch pass (shadow, canary, automatic rollback);
- :mod:`kiln.release.ungated`: releasing the versions that a dead run left ungated;
- :mod:`kiln.release.events`: ``ReleaseEvent``, what a watch pass did (light: no gate imported).
"""
