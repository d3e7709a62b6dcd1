"""The curiosity ablation in miniature (Pixel Reasoner's Table 1, lower block): five rows on TinyZoom,
several seeds per RL row, resumable stage by stage. `experiments/rl_ablation.py` is its command."""
