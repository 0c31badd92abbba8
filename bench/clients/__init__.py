"""One module per system: each runs one repeat of one scenario and prints its measurements."""
