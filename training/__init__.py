"""Training: the eGeMAPS forest baseline and frozen-encoder neural models (``ser-train``)."""
