"""A prediction's lifecycle: its states, failure codes and clock, and every transition between states."""
