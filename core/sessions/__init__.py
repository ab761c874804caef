"""Sessions: conversation lifecycle, history, turns, and token/cost accounting."""
