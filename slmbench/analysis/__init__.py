"""Analysis: numbers from stored rows, pure — DataFrames and dicts in, dataclasses out; no store, files, processes
or rendering. regression (verdicts, suspects, confirmation), trends (steps over nights), cost, claims, and rows
(reading helpers the report layer shares). Rule schema: slmbench.regression_rules."""
