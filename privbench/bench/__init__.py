"""Benchmark suites: TOML matrices of audits, planned as waves of jobs and run on executors
(in this process, local worker processes, or Ray)."""
