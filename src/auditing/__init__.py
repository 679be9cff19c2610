"""``python -m src.audit``: what is wrong with a folder before training on it, one concern per file.

``body`` (the network that embeds), ``image_pass`` (every image read once: embedding, content hash,
pixel properties), ``embedding_cache``, ``neighbours`` (chunked nearest neighbours), ``label_issues``,
``duplicates``, ``outliers``, ``decisions`` (the editable decisions.csv), ``report`` (CSVs, summary) and
``report_page`` (report.html). Nothing here moves or deletes a file.
"""
