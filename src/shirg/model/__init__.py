"""LaViDa model parts: the LLaDA language model and its sampler."""
