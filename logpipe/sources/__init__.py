"""Sources: tailed files (tail.py), child processes (children.py), standard input (stdin.py)."""
