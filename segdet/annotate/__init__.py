"""``segdet annotate``: a local web page and JSON API to draw instance masks with SAM clicks, store them as COCO
instances and train on them. ``store`` (the annotations file), ``engine`` (the click model and its embedding
cache), ``training`` (training runs in their own process), ``app`` (the FastAPI app), ``static/`` (the page)."""
