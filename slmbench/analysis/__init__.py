"""Analysis: regression verdicts, claims, cost — numbers from stored rows; no measuring, no rendering."""
