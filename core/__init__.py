"""Pixel Reasoner Studio core: protocol, visual operations, the tool loop, backends, scoring."""
