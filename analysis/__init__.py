"""Analysis of lab sweeps: statistics (stats), the markdown/CSV report (report) and SVG charts (svg).
Standard library only."""
