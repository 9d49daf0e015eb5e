"""Self-contained HTML reports: results data -> pure figure functions -> jinja2 template."""
