"""What the Triton python models import, and everything else builds on: the ensemble contract, the
router configuration, the decision engine, tokenization, the repository layout. Imports nothing
else of model_selector."""
