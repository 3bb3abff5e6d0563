"""Cost: what each pipeline, segment, version and run costs to train, serve and keep."""
