"""jobwire's benchmark suite: jobwire and its peers, measured in one run on one Postgres (see README.md)."""
