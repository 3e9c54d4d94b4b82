"""`shirg serve`: one process serving a comparison page and an OpenAI-compatible API.

``engine`` holds the loaded models and turns a batch of parsed requests into answers;
``batcher`` groups concurrent requests with equal settings into one batched model call;
``inputs`` turns OpenAI-format messages into an image and a question, within limits;
``app`` is the FastAPI application (needs the ``[serve]`` extra); ``page`` is the HTML page.
"""
