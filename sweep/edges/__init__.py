"""Edges between components: the computational graph (``graph``) that edge and path
patching sweep over."""
