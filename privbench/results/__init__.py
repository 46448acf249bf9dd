"""Results and reports: the typed result of an audit, its files (``results.json``, plots), the
workspace's SQLite database, summary tables and leaderboards."""
