"""Helper package of the executable book "Local Substitutes"."""
