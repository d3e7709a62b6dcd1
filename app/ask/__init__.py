"""The Ask tab: a question about a picture or a video, answered step by step with the tool loop."""
