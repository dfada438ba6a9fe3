"""File readers for lint. Each returns data plus problems; none raises on bad input."""
