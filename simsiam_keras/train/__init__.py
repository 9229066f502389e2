"""A pretraining run: strategies, backups and resume, the divergence guard and the history file."""
