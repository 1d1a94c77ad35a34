"""What a person reads: the HTML report of a run (`report` gathers its metrics and
figures, `page` writes the page, `internals` reads the co-occurrence map and class
features inside MM-CSE), the figures themselves (`plots`), and the step profile."""
