"""Rendering: the analysis report (Markdown, JSON, DOT, SVG), tables, plots, cost and bench tables.
Reports take results and draw them; they import no workflows/ and no cli/."""
