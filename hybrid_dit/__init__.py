"""The hybrid DiT in MobileI2V's shape (placeholder until the model lands)."""
