"""``python -m src.bench``: how fast training runs against the hardware floor and the data pipeline."""
