"""The clinical core: pure Python, standard library only."""
