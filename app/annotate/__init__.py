"""The Annotate tab: label steps or whole trajectories, give corrections, export SFT data."""
