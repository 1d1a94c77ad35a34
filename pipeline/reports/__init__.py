"""What a person reads: the HTML report of a run, its figures, and the step profile."""
