"""intake: takes citizen requests from every channel and turns each into one case."""
