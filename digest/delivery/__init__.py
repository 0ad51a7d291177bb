"""Deliveries planned and sent: set-wise planning, the ledger, the send loop, workers, providers."""
