"""The method: the symmetric stop-gradient loss, the SimSiam model with its train step, and its optimizers."""
