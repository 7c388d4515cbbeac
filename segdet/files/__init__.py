"""How segdet writes files: atomically (``atomic``), and predict's resumable output folder with its journal
(``prediction_outputs``)."""
