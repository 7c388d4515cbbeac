"""Shared data helpers used by every task: robust image I/O, sample items, splits, bad-sample bookkeeping."""
