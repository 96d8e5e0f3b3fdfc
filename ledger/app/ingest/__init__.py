"""Ingest: plan a batch of records, apply it in one store transaction, replay files and
topics, publish and export events, retry dead letters."""
