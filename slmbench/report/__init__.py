"""Reports: read tidy rows from the store, render tables (rich, Markdown, HTML, JSON). Never imports measuring code."""
