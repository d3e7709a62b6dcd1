"""The Train tab: launch SFT, RL, evaluation and gain jobs as subprocesses, watch and cancel them."""
