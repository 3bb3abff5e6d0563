"""The web pages: one module per page, each defining ``router`` (``include_in_schema=False``)."""
