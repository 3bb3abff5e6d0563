"""The typed read queries that the CLI and the UI share (one module per page's data).

(Placeholder of the version-run branch: the catalogue branch owns this file and its exports.)
"""
