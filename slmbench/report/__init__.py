"""Reports: render analysed rows (rich, Markdown, HTML, JSON). One table renderer (tables), one page shell (html),
one section protocol (section), one number formatter (slmbench.fmt). Never imports measuring or running code."""
