"""Synthetic pixel-reasoning tasks (scenes, tasks), their scripted traces, and the dataset writer."""
