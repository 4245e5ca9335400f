"""Training: the LightningModule (:mod:`.module`: model, loss, steps, metrics), the optimizer recipe (:mod:`.optim`),
callbacks (:mod:`.callbacks`), exact resume (:mod:`.resume`), run logs (:mod:`.run_logs`) and the LightningCLI
(:mod:`.runner`, ``gnvideo fit|validate|test|predict``). Importing this package imports nothing heavy; import the
modules themselves."""
