"""Building blocks shared by the vision families."""
