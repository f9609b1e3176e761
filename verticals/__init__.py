"""The verticals: medical (CT nodules), finance (fraud), manufacturing (defects); same shape each."""
