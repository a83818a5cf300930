"""The Flask side: views (one blueprint per concern), request parsing, authentication hooks, JSON errors."""
